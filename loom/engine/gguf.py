"""A pure-Python reader of the GGUF header: metadata key/values and tensor table, never the weights.

Listing models must not load them, and a truncated download must be caught before llama.cpp sees it,
so this reads the header through mmap and checks that every tensor's bytes lie inside the file.
Format (little endian): magic "GGUF", u32 version, u64 tensor count, u64 kv count, the kv pairs
(gguf string key, u32 type, value), the tensor infos (name, u32 n_dims, u64 dims, u32 type,
u64 offset), padding to `general.alignment`, then the tensor data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.engine.errors import ModelError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Longer arrays are skipped (only their length is kept): the vocabulary alone has 262k strings.
SMALL_ARRAY = 64
_MAX_DIMS = 4

# value types
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)
_SCALAR_FORMATS: dict[int, str] = {
    _UINT8: "<B",
    _INT8: "<b",
    _UINT16: "<H",
    _INT16: "<h",
    _UINT32: "<I",
    _INT32: "<i",
    _FLOAT32: "<f",
    _BOOL: "<?",
    _UINT64: "<Q",
    _INT64: "<q",
    _FLOAT64: "<d",
}

# ggml tensor type -> (elements per block, bytes per block), as in gguf-py's GGML_QUANT_SIZES.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
    42: (64, 18),  # Q2_0
}


@dataclass(frozen=True)
class GGUFArray:
    """An array value: its element type and length; `values` only for short arrays."""

    elem_type: int
    length: int
    values: tuple[Any, ...] | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def nbytes(self) -> int | None:
        """Bytes of the tensor's data, or None for a type this table doesn't know."""
        sizes = GGML_TYPE_SIZES.get(self.ggml_type)
        if sizes is None:
            return None
        n = 1
        for d in self.shape:
            n *= d
        block, size = sizes
        return (n // block) * size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def required_size(self) -> int:
        """The smallest file size that holds every tensor whose type is known."""
        end = self.data_offset
        for t in self.tensors:
            nbytes = t.nbytes
            if nbytes is not None:
                end = max(end, self.data_offset + t.offset + nbytes)
        return end


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


class _Reader:
    """Sequential little-endian reads over a buffer; running past the end means a truncated file."""

    def __init__(self, buf: mmap.mmap | bytes, version: int = 3) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        # GGUF v1 used 32-bit lengths and counts; v2+ use 64-bit.
        self.count_fmt = "<I" if version == 1 else "<Q"
        self.count_size = struct.calcsize(self.count_fmt)

    def take(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Truncated
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def count(self) -> int:
        if self.pos + self.count_size > self.size:
            raise _Truncated
        (value,) = struct.unpack_from(self.count_fmt, self.buf, self.pos)
        self.pos += self.count_size
        return int(value)

    def string(self) -> str:
        n = self.count()
        if self.pos + n > self.size:
            raise _Truncated
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.count()
        if self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def value(self, vtype: int) -> Any:
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is not None:
            return self.take(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            elem_type = self.take("<I")
            length = self.count()
            if length > self.size:  # every element takes at least one byte
                raise _Truncated
            if length <= SMALL_ARRAY:
                return GGUFArray(
                    elem_type, length, tuple(self.value(elem_type) for _ in range(length))
                )
            self.skip_array(elem_type, length)
            return GGUFArray(elem_type, length, None)
        raise _Corrupt(f"unknown metadata value type {vtype}")

    def skip_array(self, elem_type: int, length: int) -> None:
        fmt = _SCALAR_FORMATS.get(elem_type)
        if fmt is not None:
            n = struct.calcsize(fmt) * length
            if self.pos + n > self.size:
                raise _Truncated
            self.pos += n
        elif elem_type == _STRING:
            for _ in range(length):
                self.skip_string()
        else:
            for _ in range(length):
                self.value(elem_type)


def read_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF file's header; ModelError (one line) if missing, not GGUF or truncated."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"not a model file (a directory?): {p}")
    try:
        with p.open("rb") as f:
            size = p.stat().st_size
            if size < 4:
                raise ModelError(f"not a GGUF file ({size} bytes): {p}")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, p, size)
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {exc.strerror or exc}") from None


def _parse(buf: mmap.mmap, p: Path, size: int) -> GGUFHeader:
    magic = bytes(buf[:4])
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF file (bad magic {magic!r}): {p}")
    try:
        version = _Reader(buf).take("<4xI")
        if version not in (1, 2, 3):
            raise ModelError(f"unsupported GGUF version {version}: {p}")
        r = _Reader(buf, version)
        r.pos = 8
        n_tensors = r.count()
        n_kv = r.count()
        if n_tensors > size or n_kv > size:
            raise _Corrupt("impossible tensor or key count")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            vtype = r.take("<I")
            metadata[key] = r.value(vtype)
        tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.take("<I")
            if n_dims > _MAX_DIMS:
                raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.count() for _ in range(n_dims))
            ggml_type = r.take("<I")
            offset = r.take("<Q")
            tensors.append(TensorInfo(name, shape, ggml_type, offset))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise _Corrupt(f"bad alignment {alignment!r}")
        data_offset = -(-r.pos // alignment) * alignment
    except _Truncated:
        raise ModelError(f"truncated GGUF file (header cut off at {size} bytes): {p}") from None
    except _Corrupt as exc:
        raise ModelError(f"corrupt GGUF file ({exc}): {p}") from None
    header = GGUFHeader(version, metadata, tensors, data_offset, size)
    needed = header.required_size
    if needed > size:
        raise ModelError(f"truncated GGUF file ({size} of {needed} bytes): {p}")
    return header
