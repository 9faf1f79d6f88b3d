"""Serving students: artifact layout, registry, loaders (ngram / torch / ONNX Runtime), batching.

Importing this package is cheap; torch and onnxruntime are imported by the backend that needs them.
"""
