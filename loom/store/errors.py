"""The errors the store raises. Every message is one line a user can read (CLI, TUI toast)."""

from __future__ import annotations

from pathlib import Path


def _one_line(message: str) -> str:
    # Messages quote user data (paths, tags): a newline there must not break the one-line rule.
    return " ".join(str(message).split("\n")).replace("\r", " ")


class LoomError(Exception):
    """Base of every store error."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class LoomFileError(LoomError):
    """A file is missing, not a loom, damaged, or of a format version this loom cannot use."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(problem if path is None else f"{path}: {problem}")


def damaged(problem: str) -> LoomFileError:
    """The error for a file holding what loom never writes (edited behind its back, or corrupt)."""
    return LoomFileError(None, f"this loom is damaged: {problem}")


class LoomVersionError(LoomFileError):
    """The file was written by a newer loom (or needs an upgrade a read-only open cannot do)."""


class LoomExistsError(LoomFileError):
    """Creating or importing would overwrite an existing file."""


class LoomBusyError(LoomError):
    """Another process held the write lock for longer than the busy timeout."""


class ReadOnlyLoomError(LoomError):
    """A write was asked of a loom opened read-only."""


class UnknownNodeError(LoomError, KeyError):
    """A node id that is not in the loom (never was, or was deleted)."""

    def __init__(self, node_id: object) -> None:
        self.node_id = node_id
        super().__init__(f"no node {node_id!r} in this loom")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidEditError(LoomError, ValueError):
    """An edit that would break the tree or cannot be done as asked (the loom is left unchanged)."""


class TokensUnavailableError(LoomError):
    """Exact tokens were asked for text whose tokens are unknown, and no tokenizer is set."""


class SearchQueryError(LoomError, ValueError):
    """A search query the index cannot run."""
