"""`python tests/serve_llama_cpp.py ARGS…`: llama-cpp-python's server with loom's AMX guard.

The server builds its model parameters with `llama_model_default_params()` and has no option to
turn weight repacking off, so on an AMX CPU it would crash on the first request (see
loom.engine.cpu). This launcher applies the same decision as loom's own engine before the server
starts, by wrapping that one function; everything else is `python -m llama_cpp.server ARGS…`.
"""

from __future__ import annotations

import builtins
import runpy
import sys
from typing import Any

import llama_cpp.llama as llama_module
import llama_cpp.llama_cpp as bindings
import numpy as np

from loom.engine.runtime import weight_repacking

if not weight_repacking().allowed:
    _default_params = bindings.llama_model_default_params

    def _params_without_repacking() -> Any:
        params = _default_params()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = _params_without_repacking


# For every token whose logprobs it returns (every prompt token, with `echo`), the server sorts
# (logprob, id) pairs of the whole vocabulary in Python, to take the top `logprobs` of them:
# 0.3-0.7 s a token for Gemma's 262k entries, minutes for one labelling run. The module's own
# `zip`, `sorted` and `list` are shadowed so that exactly that expression,
# `list(sorted(zip(logprobs, range(len(logprobs))), reverse=True))`, gives a sequence with the
# same items in the same order (logprob descending, ties by id descending, as Python orders the
# pairs) computed with numpy, and only as far as it is read. Every other call is the builtin's.
_LARGE = 4096  # a vocabulary, not some other pair of sequences


class _Pairs:
    """zip(logprobs, range(n)) over a vocabulary, not yet sorted."""

    def __init__(self, values: Any) -> None:
        self.values = values


class _Ranked:
    """The pairs in the order `sorted(..., reverse=True)` gives, made when sliced."""

    def __init__(self, values: Any) -> None:
        self._values = values
        self._array = np.asarray(values, dtype=np.float64)
        self._order: Any = None

    def _top(self, k: int) -> Any:
        n = len(self._array)
        if k <= 0:
            return np.arange(0)
        if k >= n:
            candidates = np.arange(n)
        else:  # everything tied with the k-th value too, so ties at the edge order as Python's
            kth = np.partition(self._array, n - k)[n - k]
            candidates = np.nonzero(self._array >= kth)[0]
        order = candidates[np.lexsort((-candidates, -self._array[candidates]))]
        return order[:k]

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice) and index.start in (None, 0) and index.step in (None, 1):
            stop = len(self) if index.stop is None else min(index.stop, len(self))
            return [(self._values[i], int(i)) for i in self._top(max(stop, 0))]
        if self._order is None:
            self._order = self._top(len(self))
        picked = self._order[index]
        if isinstance(index, slice):
            return [(self._values[i], int(i)) for i in picked]
        return (self._values[picked], int(picked))

    def __iter__(self) -> Any:
        return iter(self[:])


def _zip(*iterables: Any, **kwargs: Any) -> Any:
    if (
        not kwargs
        and len(iterables) == 2
        and isinstance(iterables[1], range)
        and iterables[1] == range(len(iterables[1]))
        and len(iterables[1]) >= _LARGE
        and isinstance(iterables[0], (list, np.ndarray))
        and len(iterables[0]) == len(iterables[1])
    ):
        return _Pairs(iterables[0])
    return builtins.zip(*iterables, **kwargs)  # noqa: B905 - the caller's own zip


def _sorted(iterable: Any, /, *, key: Any = None, reverse: bool = False) -> Any:
    if isinstance(iterable, _Pairs):
        if key is None and reverse:
            return _Ranked(iterable.values)
        iterable = builtins.zip(iterable.values, range(len(iterable.values)), strict=True)
    return builtins.sorted(iterable, key=key, reverse=reverse)


class _ListType(type):
    """`isinstance(x, list)` in the module still means the builtin list."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, builtins.list)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, builtins.list)


class _list(metaclass=_ListType):  # stands for the builtin `list` in the module
    def __new__(cls, iterable: Any = (), /) -> Any:  # type: ignore[misc]
        return iterable if isinstance(iterable, _Ranked) else builtins.list(iterable)

    def __class_getitem__(cls, item: Any) -> Any:
        return builtins.list[item]


llama_module.zip = _zip  # type: ignore[attr-defined]
llama_module.sorted = _sorted  # type: ignore[attr-defined]
llama_module.list = _list  # type: ignore[attr-defined]

sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
