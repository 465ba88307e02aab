"""The tree and its file. Never imports textual or rich."""
