"""understudy: shadow an LLM classifier, train a small BERT student on its answers, switch to it."""

__version__ = "0.1.0"
