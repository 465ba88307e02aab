"""What persona labelling costs, as a multiple of generating the branches it labels.

    python bench/persona_cost.py                     # N=8 branches x 64 tokens, 3 personas
    python bench/persona_cost.py --n-outputs-max 128 # the engine with larger scoring chunks

One run, the real default model: generate N branches of T tokens from the narrators prompt
(sessions/narrators.toml, 3 personas), then label them (`label_nodes` on a temporary loom: one
engine.score call per persona over all N siblings, prefix decoded once per call; the null comes
free from the logprobs stored at generation). Generation and labelling alternate `--repeat` times
and the best time of each is kept. On a shared machine wall time mostly measures the neighbours,
so process CPU time (all threads) is reported too. Goal: label/generate <= 1.0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loom.engine.engine import Engine  # noqa: E402
from loom.engine.results import Branch  # noqa: E402
from loom.engine.sampling import SamplerSettings  # noqa: E402
from loom.personas.actions import label_nodes  # noqa: E402
from loom.personas.sets import load_persona_set  # noqa: E402
from loom.store.loom import Loom, NewNode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="branches")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per branch")
    ap.add_argument("--personas", default=str(ROOT / "sessions" / "narrators.toml"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--n-outputs-max", type=int, default=None, help="engine logits rows per decode")
    args = ap.parse_args()

    persona_set = load_persona_set(args.personas)
    engine = Engine.load(n_outputs_max=args.n_outputs_max)
    prompt = engine.tokenize(persona_set.prompt)
    settings = SamplerSettings(max_tokens=args.tokens, seed=1234)
    # No stop at EOS would be fairer still, but a base model rarely ends a story within 64 tokens.
    engine.generate(prompt, 2, SamplerSettings(max_tokens=4, seed=1))  # warm-up
    gen_times: list[tuple[float, float]] = []
    label_times: list[tuple[float, float]] = []
    calls = 0
    branches: list[Branch] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            engine.clear_cache()  # neither side may reuse the other's KV
            t, c = time.perf_counter(), time.process_time()
            branches = engine.generate(prompt, args.n, settings)
            gen_times.append((time.perf_counter() - t, time.process_time() - c))
            loom = Loom.create(
                Path(tmp) / f"bench{r}.loom",
                prompt=persona_set.prompt,
                prompt_tokens=engine.tokens_for(persona_set.prompt),
            )
            loom.add_children(
                loom.root_id, [NewNode(b.text, b.tokens, author="model") for b in branches]
            )
            engine.clear_cache()
            t, c = time.perf_counter(), time.process_time()
            run = label_nodes(loom, engine, persona_set)
            label_times.append((time.perf_counter() - t, time.process_time() - c))
            calls = run.engine_calls
            loom.close()
    n_tok = sum(len(b.tokens) for b in branches)
    gen, lab = min(w for w, _ in gen_times), min(w for w, _ in label_times)
    gen_cpu, lab_cpu = min(c for _, c in gen_times), min(c for _, c in label_times)
    print(
        f"model {engine.info.name}  n_outputs_max {engine.runtime.n_outputs_max}  "
        f"personas {len(persona_set.personas)}  branches {args.n} x {args.tokens} tokens "
        f"({n_tok} generated)"
    )
    print(f"generate  {gen:7.2f} s wall {gen_cpu:7.2f} s cpu  ({n_tok / gen:6.1f} tok/s)")
    print(
        f"label     {lab:7.2f} s wall {lab_cpu:7.2f} s cpu  "
        f"({n_tok * len(persona_set.personas) / lab:6.1f} scored tok/s, "
        f"{calls} engine.score calls)"
    )
    print(f"label / generate = {lab / gen:.2f}x wall, {lab_cpu / gen_cpu:.2f}x cpu  (goal <= 1.0x)")


if __name__ == "__main__":
    main()
