"""What the store needs from a model to keep a node's tokens in step with its text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from loom.tokens import TokenArray


@runtime_checkable
class Tokenizer(Protocol):
    """Tokenizes text the way the model reads it (no BOS), without probabilities."""

    def tokenize(self, text: str) -> TokenArray: ...


class FunctionTokenizer:
    """Adapts a plain function, e.g. `FunctionTokenizer(engine.tokens_for)`."""

    def __init__(self, function: Callable[[str], TokenArray]) -> None:
        self._function = function

    def tokenize(self, text: str) -> TokenArray:
        return self._function(text)
