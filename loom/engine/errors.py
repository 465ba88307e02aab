"""The engine's exceptions: each carries a clear one-line message, fit to show a person as is."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.engine.results import Branch

# Appended to failures of llama.cpp itself (load, context, decode): `loom doctor` says why.
DOCTOR_HINT = "(run `loom doctor` to check the engine on this machine)"


class EngineError(Exception):
    """Base class of every error the engine layer raises on purpose."""


class ModelError(EngineError):
    """A model file is missing, not a GGUF, truncated/corrupt, or the runtime cannot load it."""


class ContextOverflowError(EngineError):
    """A request needs more positions than the context holds."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"prompt of {n_tokens} tokens does not fit the context of {n_ctx} tokens"
            " (keep the most recent tokens or load the model with a larger n_ctx)"
        )


class RemoteError(EngineError):
    """The remote completion server is unreachable or answered with an error."""


class EngineCrashError(EngineError):
    """llama.cpp killed a child process that tried the model (a native crash, not an exception)."""


class GenerationInterrupted(RemoteError):
    """The server went away in the middle of a generation: `partial` holds every branch as it
    stood (tokens that arrived are kept; a branch that got none is empty)."""

    def __init__(self, message: str, partial: list[Branch]) -> None:
        super().__init__(message)
        self.partial = partial
