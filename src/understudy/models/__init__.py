"""Student models: a compact BERT encoder, pluggable layers, classification heads, tokenizer.

Modules: ``config`` (EncoderConfig), ``layers`` (feed-forward / token-mixer registries),
``encoder`` (BertEncoder, loads Hugging Face BERT checkpoints), ``classifier`` (StudentModel:
encoder + pooling + one linear head per label field), ``tokenizer`` and ``pretrained`` (where the
packaged MiniLM lives).
"""
