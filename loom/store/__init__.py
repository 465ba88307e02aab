"""The tree and its file: `loom.store.loom.Loom` over one SQLite file with an event log, undo and
redo, replay, search, and the event-log reader (history.py). Never imports textual or rich, and
knows nothing of models beyond the data it keeps.
"""
