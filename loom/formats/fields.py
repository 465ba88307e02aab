"""Typed access to parsed JSON, with one-line `FormatError`s that say where the problem is."""

from __future__ import annotations

import math
from typing import Any

from loom.formats.errors import FormatError


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object, not {kind(value)}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{where} must be a JSON array, not {kind(value)}")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where} must be a string, not {kind(value)}")
    return value


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where} must be an integer, not {kind(value)}")
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(f"{where} must be a number, not {kind(value)}")
    try:
        as_float = float(value)
    except OverflowError:  # an integer with hundreds of digits
        as_float = math.inf
    if not math.isfinite(as_float):
        raise FormatError(f"{where} must be a finite number")
    return as_float


def integer_in(value: Any, where: str, low: int, high: int) -> int:
    """An integer from `low` to `high` (both included)."""
    whole = integer(value, where)
    if not low <= whole <= high:
        raise FormatError(f"{where} is out of range ({low} to {high})")
    return whole


FLOAT32_MAX = 3.4028234663852886e38


def float32(value: Any, where: str) -> float:
    """A finite number a float32 holds (what token probabilities are kept as)."""
    finite = number(value, where)
    if abs(finite) > FLOAT32_MAX:
        raise FormatError(f"{where} is out of range (beyond ±3.4e38)")
    return finite


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"{where} must be true or false, not {kind(value)}")
    return value


def strings(value: Any, where: str) -> list[str]:
    return [string(item, f"{where}[{i}]") for i, item in enumerate(array(value, where))]


def brief(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut short: error messages quote file data, which may be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def listing(values: list[Any], most: int) -> str:
    """The first `most` values, briefly, and how many more there are."""
    shown = ", ".join(brief(v, 40) for v in values[:most])
    return shown + (f" and {len(values) - most} more" if len(values) > most else "")


def kind(value: Any) -> str:
    """A JSON-ish name for the type of `value`, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
