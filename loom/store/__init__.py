"""The tree and its file. Never imports textual or rich.

The API is `loom.store.loom.Loom` (see api_contract.md); the names below are re-exported for
convenience.
"""

from loom.store.errors import (
    InvalidEditError,
    LoomBusyError,
    LoomError,
    LoomExistsError,
    LoomFileError,
    LoomVersionError,
    ReadOnlyLoomError,
    SearchQueryError,
    TokensUnavailableError,
    UnknownNodeError,
)
from loom.store.events import Event
from loom.store.loom import Loom, NewNode, NodeHeader, SearchHit
from loom.store.tokenizer import FunctionTokenizer, Tokenizer

__all__ = [
    "Event",
    "FunctionTokenizer",
    "InvalidEditError",
    "Loom",
    "LoomBusyError",
    "LoomError",
    "LoomExistsError",
    "LoomFileError",
    "LoomVersionError",
    "NewNode",
    "NodeHeader",
    "ReadOnlyLoomError",
    "SearchHit",
    "SearchQueryError",
    "Tokenizer",
    "TokensUnavailableError",
    "UnknownNodeError",
]
