"""loom: a terminal loom for exploring what a local base language model could say."""

__version__ = "0.1.0"
