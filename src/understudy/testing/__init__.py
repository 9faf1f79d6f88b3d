"""Shipped fakes for tests, demos and benchmarks: a fake teacher server and tiny models."""
