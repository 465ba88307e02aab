"""`python -m loom.engine.trial MODEL.gguf`: load a model and decode one token, then print what
happened as one JSON line. The child process of loom.engine.probe: if llama.cpp crashes here,
only this process dies.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from loom.engine.engine import Engine
from loom.engine.errors import EngineError
from loom.engine.runtime import weights_were_repacked
from loom.engine.sampling import SamplerSettings

PROMPT = "The croissant"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m loom.engine.trial MODEL.gguf", file=sys.stderr)
        return 2
    try:
        started = time.perf_counter()
        engine = Engine.load(args[0], n_ctx=256, n_seq_max=1, check=False)
        loaded = time.perf_counter()
        with engine:
            (branch,) = engine.generate(
                engine.tokenize(PROMPT), 1, SamplerSettings(temperature=0.0, max_tokens=1)
            )
        decoded = time.perf_counter()
    except EngineError as exc:
        print(f"loom: error: {exc}", file=sys.stderr)
        return 1
    report = {
        "load_s": loaded - started,
        "decode_s": decoded - loaded,
        "token": branch.text,
        "repacked": weights_were_repacked(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
