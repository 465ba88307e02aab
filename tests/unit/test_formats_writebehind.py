"""An export is written from a thread (loom.formats.writebehind): every byte in order, a write
that fails raised to the exporter, which then stops making the rest."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from loom.formats import writebehind


def test_every_chunk_is_written_in_order() -> None:
    chunks = [f"line {i}\n".encode() * (i % 500) for i in range(3000)]  # ~40 MB-blocks' worth
    out = io.BytesIO()
    writebehind.write_all(out, chunks)
    assert out.getvalue() == b"".join(chunks)


class FullDisk(io.RawIOBase):
    """Takes `room` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)


def test_a_failed_write_is_raised_and_the_export_stops() -> None:
    made = 0

    def chunks() -> Iterator[bytes]:
        nonlocal made
        for _ in range(10_000):
            made += 1
            yield b"x" * 100_000  # 1 GB in all, were it all made

    with pytest.raises(OSError, match="No space left"):
        writebehind.write_all(FullDisk(3 << 20), chunks())  # type: ignore[arg-type]
    assert made < 500  # it stopped soon after the failure, not at the end


def test_what_the_maker_raises_is_raised_after_the_writes_end() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * (2 << 20)
        raise ValueError("a node is damaged")

    out = io.BytesIO()
    with pytest.raises(ValueError, match="damaged"):
        writebehind.write_all(out, chunks())
