"""Tell a loom file from anything else by reading its first 100 bytes, before SQLite touches it.

SQLite happily treats an empty file as an empty database and would write to it; a foreign database
would be changed by our pragmas. Refusing here, from a plain read, leaves such files untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

from loom.store.errors import LoomFileError, LoomVersionError
from loom.store.schema import APPLICATION_ID, schema_version

_MAGIC = b"SQLite format 3\x00"
_HEADER = 100


def check_header(path: Path) -> int:
    """`LoomFileError` unless `path` looks like a loom this code can read; else its version."""
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise LoomFileError(path, "no such file") from None
    except IsADirectoryError:
        raise LoomFileError(path, "is a directory, not a loom file") from None
    except OSError as exc:
        raise LoomFileError(path, f"cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise LoomFileError(path, "is empty, not a loom file")
    if not header.startswith(_MAGIC):
        raise LoomFileError(path, "is not a loom file (not an SQLite database)")
    if len(header) < _HEADER:
        raise LoomFileError(path, "is truncated (shorter than an SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise LoomFileError(path, "is corrupt (bad page size in the header)")
    if int.from_bytes(header[68:72], "big") != APPLICATION_ID:
        raise LoomFileError(path, "is an SQLite database but not a loom file")
    version = int.from_bytes(header[60:64], "big")
    _check_version(path, version)
    # The page count is trustworthy only when its "valid-for" counter matches the change counter,
    # and the file may legitimately be short while a write-ahead log still holds pages to copy back.
    if header[24:28] == header[92:96] and not has_wal(path):
        pages = int.from_bytes(header[28:32], "big")
        if size < pages * page_size:
            raise LoomFileError(path, f"is truncated ({size} of {pages * page_size} bytes)")
    return version


def _check_version(path: Path, version: int) -> None:
    if version > schema_version():
        raise LoomVersionError(
            path,
            f"was written by a newer loom (file format {version}; this loom reads up to "
            f"{schema_version()}): upgrade loom to open it",
        )
    if version < 1:
        raise LoomFileError(path, "is an unfinished loom file (no schema)")


def check_version(path: Path | None, version: int) -> None:
    """The same version rule for the value SQLite reports (the WAL may hold a newer page 1)."""
    _check_version(path if path is not None else Path(":memory:"), version)


def has_wal(path: Path) -> bool:
    """Whether a write-ahead log with data lies beside `path` (changes maybe not in the file)."""
    try:
        return os.path.getsize(f"{path}-wal") > 0
    except OSError:
        return False
