"""The one error every import/export problem is reported as."""

from __future__ import annotations

from loom.store.errors import LoomError


class FormatError(LoomError, ValueError):
    """A file is not in the format it claims, or not in any format loom knows.

    A `LoomError` (one-line message: the CLI prints it after "error:", the TUI in a toast, and a
    newline quoted from the file cannot break that) and a `ValueError` (bad input).
    """
