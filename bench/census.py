"""What a census costs: its rollouts against plain batched generation, its labelling against the
bare scoring ceiling.

    python bench/census.py [--rollouts 32] [--tokens 48] [--batch 16] [--repeat 3]

One run, the real default model, the croissant persona set (sessions/croissant.toml) and its
prompt. Prints:
  - rollout throughput: a census of R x L (`run_census`: batches of B rollouts, each batch from an
    empty KV cache so a seed reproduces it, every rollout labelled) as generated tokens per second
    of the rollouts alone, and of the whole census (labelling included), against one engine
    generation of N=B branches x L tokens from an empty cache; goal: rollouts >= 0.85 x generation;
  - labelling against the bare scoring ceiling: the wall time of labelling a batch of rollouts
    against the time the same work spent inside llama_decode (the engine accumulates it, as
    bench/branch_throughput.py measures decode); goal >= 0.90.
The modes alternate `--repeat` times and the best of each is kept (the machine is shared: wall
time mostly measures the neighbours). Process CPU time is printed beside the wall times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loom.app.census import CensusSettings, run_census  # noqa: E402
from loom.engine.engine import Engine  # noqa: E402
from loom.engine.models import default_model_path  # noqa: E402
from loom.engine.sampling import SamplerSettings  # noqa: E402
from loom.personas.scoring import PersonaScorer  # noqa: E402
from loom.personas.sets import load_persona_set  # noqa: E402


class Timed:
    """The engine, with the time its generate and score calls take (wall, and decode inside)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.generate_wall = 0.0
        self.score_wall = 0.0
        self.score_decode = 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def generate(self, *args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return self.engine.generate(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            self.generate_wall += time.perf_counter() - start

    def score(self, *args: object, **kwargs: object) -> object:
        before = self.engine.stats.decode_seconds
        start = time.perf_counter()
        try:
            return self.engine.score(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            self.score_wall += time.perf_counter() - start
            self.score_decode += self.engine.stats.decode_seconds - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    croissant = load_persona_set(ROOT / "sessions" / "croissant.toml")
    engine = Engine.load(default_model_path(), n_ctx=4096, n_seq_max=max(16, args.batch))
    context = engine.tokenize(croissant.prompt)
    R, L, B = args.rollouts, args.tokens, args.batch
    print(f"model {engine.info.name}; prompt {len(context)} tokens; census R={R} x L={L} "
          f"in batches of {B}; {len(croissant.personas)} personas")  # fmt: skip

    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = max(best.get(key, 0.0), value)

    for round_ in range(args.repeat):
        # plain generation: N=B branches x L tokens from an empty cache, as a census batch is
        engine.clear_cache()
        cpu, start = time.process_time(), time.perf_counter()
        branches = engine.generate(
            context, B, SamplerSettings(temperature=1.0, max_tokens=L, seed=100 + round_),
            top_logprobs=5, fresh=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        generated = sum(len(b.tokens) for b in branches)
        keep("generate", generated / wall)
        print(f"round {round_}: generation {generated} tokens in {wall:.2f} s "
              f"({generated / wall:.1f} tok/s, cpu {time.process_time() - cpu:.2f} s)")  # fmt: skip

        # the census: the same sampler, R rollouts, every one labelled
        timed = Timed(engine)
        settings = CensusSettings(rollouts=R, tokens=L, batch=B, seed=200 + round_)
        cpu, start = time.process_time(), time.perf_counter()
        census = run_census(timed, croissant, 0, context, settings)  # type: ignore[arg-type]
        wall = time.perf_counter() - start
        tokens = sum(len(r.tokens) for r in census.rollouts)
        keep("rollouts", tokens / timed.generate_wall)
        keep("census", tokens / wall)
        keep("label_ratio", timed.score_decode / timed.score_wall)
        print(f"round {round_}: census {tokens} tokens in {wall:.2f} s: generate "
              f"{timed.generate_wall:.2f} s ({tokens / timed.generate_wall:.1f} tok/s), label "
              f"{timed.score_wall:.2f} s of which {timed.score_decode:.2f} s in llama_decode "
              f"(cpu {time.process_time() - cpu:.2f} s)")  # fmt: skip

    # the bare ceiling of labelling, outside the census: the scorer on one batch, decode vs wall
    scorer = PersonaScorer(engine, croissant, calibration="none")
    ids = [[int(t) for t in b.tokens.ids] for b in branches]
    engine.reset_stats()
    start = time.perf_counter()
    scorer.logliks(context, ids, [b.tokens.logprobs for b in branches])
    wall = time.perf_counter() - start
    bare = engine.stats.decode_seconds / wall

    print()
    print(f"generation N={B} x {L}:        {best['generate']:7.1f} tok/s")
    print(f"census rollouts R={R} x {L}:   {best['rollouts']:7.1f} tok/s   "
          f"ratio {best['rollouts'] / best['generate']:.2f}   (goal >= 0.85)")  # fmt: skip
    print(f"census with labelling:        {best['census']:7.1f} tok/s   "
          f"ratio {best['census'] / best['generate']:.2f}")  # fmt: skip
    print(f"labelling: llama_decode / wall {best['label_ratio']:.2f} in the census, "
          f"{bare:.2f} for one batch alone   (goal >= 0.90)")  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
