"""Connections and transactions: the only module that opens SQLite.

Every write is one `BEGIN IMMEDIATE` transaction, so two processes writing the same loom queue on
the write lock (waiting up to `BUSY_TIMEOUT_MS`) and each re-reads what it needs inside its own
transaction: no lost updates. WAL with synchronous=NORMAL: a killed process never loses a committed
transaction (only a power cut may drop the last few, and never corrupts the file).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loom.store.errors import (
    LoomBusyError,
    LoomError,
    LoomExistsError,
    LoomFileError,
    LoomVersionError,
    ReadOnlyLoomError,
)
from loom.store.filecheck import check_header, check_version, has_wal
from loom.store.schema import (
    APPLICATION_ID,
    REQUIRED_TABLES,
    create_schema,
    migrate,
    readable_from,
    schema_version,
)

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

# Build temp files are flock-ed only where flock and SQLite's own (POSIX) locks are known not to
# interact: on the BSDs they share one lock table, and SQLite would find its file locked.
_FLOCK = fcntl is not None and sys.platform.startswith("linux")

BUSY_TIMEOUT_MS = 10_000
PAGE_SIZE = 8192
# What SQLite reports when it cannot make the -shm (and -wal) files a WAL-mode reader needs.
_NO_SIDECARS = ("SQLITE_READONLY", "SQLITE_CANTOPEN")


@contextlib.contextmanager
def sql_errors(path: Path | None) -> Iterator[None]:
    """Turn SQLite's errors about the file into one-line loom errors (bugs stay SQLite errors)."""
    where = str(path) if path is not None else ":memory:"
    try:
        yield
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if "locked" in message or "busy" in message:
            raise LoomBusyError(
                f"{where}: is busy: another process has been writing to it for over "
                f"{BUSY_TIMEOUT_MS // 1000} s; try again"
            ) from None
        if "readonly" in message:
            raise ReadOnlyLoomError(f"{where}: cannot write ({message})") from None
        raise LoomFileError(path, f"cannot be read or written ({message})") from None
    except sqlite3.DatabaseError as exc:
        if type(exc) is not sqlite3.DatabaseError:
            raise  # IntegrityError, ProgrammingError...: a bug in the store, not a bad file
        raise LoomFileError(path, f"is corrupt ({exc})") from None
    except json.JSONDecodeError:
        # Everything the store keeps as JSON it wrote itself: if it does not parse, the file was
        # changed behind loom's back.
        raise LoomFileError(path, "is damaged (a value stored as JSON is not JSON)") from None


def _uri(path: Path, mode: str) -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        target,
        uri=uri,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # guarded by Database's lock; the TUI writes from worker threads
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def scratch(cache_mb: int) -> sqlite3.Connection:
    """An empty loom of the newest schema in a temporary file SQLite deletes when it is closed,
    keeping at most `cache_mb` of it in memory; inside an open transaction, never committed (a
    place to apply events to, for a check)."""
    conn = _connect("", uri=False)
    conn.execute(f"PRAGMA cache_size = {-1024 * cache_mb}")
    conn.execute("PRAGMA journal_mode = OFF")  # nothing in it is rolled back or kept
    conn.execute("BEGIN")
    create_schema(conn)
    return conn


class Database:
    """One connection to one loom and the transactions on it."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self.closed = False
        self._lock = threading.RLock()

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool) -> Database:
        """Open an existing loom; `LoomFileError` (file untouched) if it is not one we can use."""
        check_header(path)
        with sql_errors(path):
            conn, version = _connect_readonly(path)
        try:
            if readonly:
                if version < readable_from():
                    raise LoomVersionError(
                        path,
                        f"was written by an older loom (file format {version}); open it once "
                        "without read-only to upgrade it",
                    )
                return cls(conn, path, readonly=True)
        except BaseException:
            conn.close()
            raise
        conn.close()
        conn = _connect(_uri(path, "rw"), uri=True)
        try:
            with sql_errors(path):
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                if version < schema_version():
                    _upgrade(conn, path)
            return cls(conn, path, readonly=False)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def memory(cls, *, readonly: bool = False) -> Database:
        """A loom that lives only in memory (replays)."""
        conn = _connect(":memory:", uri=False)
        conn.execute("BEGIN")
        create_schema(conn)
        conn.execute("COMMIT")
        return cls(conn, None, readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.conn.close()

    def _check_open(self) -> None:
        if self.closed:
            raise LoomError(f"{self.path or ':memory:'}: this loom has been closed")

    # --- transactions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, *, force: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on normal exit, rolled back on any exception.

        `force` lets a replay drive a database it hands out read-only.
        """
        if self.readonly and not force:
            raise ReadOnlyLoomError(f"{self.path}: opened read-only")
        with self._lock, sql_errors(self.path):
            self._check_open()
            if self.conn.in_transaction:
                raise LoomError("internal error: nested write transaction")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads (joins an open transaction if there is one)."""
        with self._lock, sql_errors(self.path):
            self._check_open()
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")


def _connect_readonly(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to a loom and its file format version.

    SQLite reads a WAL-mode file through `-wal`/`-shm` files beside it, which it must be able to
    create. Where it cannot (a folder the user cannot write, a read-only file system) and no
    `-wal` holds changes, the file is read as immutable, with no sidecars and no locks: right as
    long as nobody writes it meanwhile, which nobody can be doing, since any writer keeps a `-wal`.
    A `-wal` with data that SQLite cannot read (no `-shm` and none can be made) is refused:
    reading the file without it would silently show an older state of the loom.
    """
    conn = _connect(_uri(path, "ro"), uri=True)
    try:
        return conn, _validate(conn, path)
    except sqlite3.OperationalError as exc:
        conn.close()
        if not str(getattr(exc, "sqlite_errorname", "")).startswith(_NO_SIDECARS):
            raise
    except BaseException:
        conn.close()
        raise
    if has_wal(path):
        raise LoomFileError(
            path,
            f"cannot be read here: {path.name}-wal beside it holds changes not yet copied into it, "
            "and SQLite cannot read them without writing in its folder; open it once where the "
            "folder is writable",
        )
    conn = _connect(_uri(path, "ro") + "&immutable=1", uri=True)
    try:
        return conn, _validate(conn, path)
    except BaseException:
        conn.close()
        raise


def _validate(conn: sqlite3.Connection, path: Path) -> int:
    """Cheap checks that do not grow with the tree: identity, version, tables, root."""
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise LoomFileError(path, "is an SQLite database but not a loom file")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    check_version(path, version)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = sorted(REQUIRED_TABLES - tables)
    if version >= 2 and "vocab" not in tables:
        missing.insert(0, "vocab")
    if missing:
        raise LoomFileError(path, f"is damaged (missing table {missing[0]})")
    row = conn.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
    root = _stored_id(row[0]) if row is not None else None
    found = None if root is None else conn.execute("SELECT parent FROM nodes WHERE id = ?", (root,))
    parent = None if found is None else found.fetchone()
    if parent is None:
        raise LoomFileError(path, "is damaged (no root node)")
    if parent[0] is not None:
        raise LoomFileError(
            path, f"is damaged (the root node {root} has a parent, node {parent[0]})"
        )
    return version


def _stored_id(text: Any) -> int | None:
    """A node id kept as JSON in the meta table (None unless it is one SQLite can hold)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        return None
    return value


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have upgraded it while we waited for the lock.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        check_version(path, version)
        try:
            migrate(conn, version)
        except LoomError:
            raise
        except Exception as exc:
            raise LoomFileError(
                path, f"could not be upgraded from file format {version} ({exc})"
            ) from exc
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# --- building a new file ------------------------------------------------------------------------


BUILD_CACHE_KIB = 64 * 1024  # the page cache of a build (SQLite's default is 2 MiB)


@contextlib.contextmanager
def building(path: Path) -> Iterator[sqlite3.Connection]:
    """A new loom built under a temporary name and moved to `path` only once complete.

    A failure leaves no file at `path`; an existing `path` is never overwritten. A crash (a
    SIGKILL, a power cut) leaves the temporary file, named for the process and locked while it
    is written: the next build in the folder removes it (see `remove_dead_builds`).
    """
    if os.path.lexists(path):
        raise LoomExistsError(path, "already exists")
    remove_dead_builds(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        claim = _claim(tmp)
    except OSError as exc:
        raise LoomFileError(path, f"cannot be created ({exc.strerror or exc})") from None
    try:
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
        except sqlite3.Error as exc:
            raise LoomFileError(path, f"cannot be created ({exc})") from None
        try:
            with sql_errors(path):
                # Nothing else can see this file yet: skip durability until the end.
                conn.execute("PRAGMA journal_mode = MEMORY")
                conn.execute("PRAGMA synchronous = OFF")
                # 8 KiB pages: a node's packed tokens (~1.5 KB) leave less unused space in them
                # than in 4 KiB ones (measured: a tenth of the file).
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                # A build is one transaction: with SQLite's default 2 MiB page cache, its pages
                # spill to the file and are read back as the indexes grow.
                conn.execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
                conn.execute("BEGIN")
                create_schema(conn)
                yield conn
                if conn.in_transaction:
                    conn.execute("COMMIT")
                conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        _fsync(tmp)
        _place(tmp, path)
    except BaseException:
        for leftover in (tmp, *_sidecars(tmp)):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    finally:
        os.close(claim)  # after SQLite's own handles: closing a file drops its POSIX locks


def _sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]


# `.NAME.PID-RANDOM.tmp`, as `building` names its files, and SQLite's files beside one.
_BUILD_TEMP = re.compile(
    r"\.(?:.+)\.(?P<pid>[0-9]+)-[0-9a-f]{8}\.tmp(?P<sidecar>-wal|-shm|-journal)?"
)


def _claim(tmp: Path) -> int:
    """Create the temporary file and hold a lock on it for as long as the build lasts."""
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # SQLite's own default mode
    if _FLOCK:
        with contextlib.suppress(OSError):  # a file system without flock: the pid must do
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def remove_dead_builds(folder: Path) -> None:
    """Delete what builds killed mid-way left in `folder`.

    A file goes only when no process has the pid in its name and no one holds its lock: the pid
    alone cannot be trusted across PID namespaces (containers sharing the folder), the lock alone
    not on file systems without flock. A live build's file is never touched.
    """
    if os.name != "posix":
        return  # os.kill(pid, 0) is no probe elsewhere (on Windows it kills)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _BUILD_TEMP.fullmatch(name)
        if match is None or _process_exists(int(match["pid"])):
            continue
        main = folder / (name[: -len(match["sidecar"])] if match["sidecar"] else name)
        if _is_locked(main):
            continue
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OverflowError, ValueError):
        return False  # no process can have that id
    return True


def _is_locked(path: Path) -> bool:
    if not _FLOCK:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone already (or a sidecar whose main file went first)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` atomically, refusing to replace a file that appeared meanwhile."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise LoomExistsError(path, "already exists") from None
    except OSError:
        # No hard links here (some network or FAT file systems): check, then rename.
        if os.path.lexists(path):
            raise LoomExistsError(path, "already exists") from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
