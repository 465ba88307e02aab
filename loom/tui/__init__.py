"""The Textual app: a thin shell over store, engine and personas."""
