"""What it costs the default model to read text it did not write (`loom score`, the app's `S`).

    python bench/read_throughput.py [--tokens 400] [--siblings 4] [--top 5]

Prints tokens read per second for:
  - one path of T tokens read as one continuation (how a socketteer import is read), with the
    top-k alternatives and entropy (`Engine.read`) and without them (`Engine.score`): the cost of
    the alternatives over the plain scoring pass;
  - S sibling continuations of T/S tokens after one shared context, read in one call (how the
    siblings of a node are read): batching across sequences.
Every run starts from an empty KV cache. The output layer (262k rows for Gemma) dominates: a
read costs about as much per token as a prefill with logits at every position.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loom.engine.engine import Engine
from loom.engine.models import default_model_path

TEXT = (
    "The lighthouse keeper climbed the stairs every night, counting the steps as her father had "
    "taught her, and at the top she wiped the salt from the glass before she lit the lamp. "
)


def timed(run: object) -> float:
    start = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--siblings", type=int, default=4)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    engine = Engine.load(default_model_path(), n_ctx=4096, n_seq_max=16)
    ids = (engine.tokenize(TEXT) * (args.tokens // 30 + 1))[: args.tokens]
    context, path = ids[:8], ids[8:]
    n = len(path)

    engine.clear_cache()
    t = timed(lambda: engine.read(context, [path], args.top))
    print(f"one path of {n} tokens, read with top-{args.top} + entropy: {n / t:6.0f} tok/s")
    engine.clear_cache()
    t = timed(lambda: engine.score(context, [path]))
    print(f"one path of {n} tokens, logprobs only (score):        {n / t:6.0f} tok/s")
    size = n // args.siblings
    siblings = [path[i * size : (i + 1) * size] for i in range(args.siblings)]
    engine.clear_cache()
    t = timed(lambda: engine.read(context, siblings, args.top))
    total = size * args.siblings
    print(f"{args.siblings} siblings of {size} tokens in one call, top-{args.top}:     "
          f"{total / t:6.0f} tok/s")  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
