"""Branch throughput of the batched engine on the default model, against its ceilings and baselines.

    python bench/branch_throughput.py [--branches 8] [--tokens 64] [--prompt-tokens 200]

Prints, in one run:
  - engine tokens/s: N branches x T tokens from a ~200-token prompt, top-5 recorded;
  - ratio to the decode-only ceiling of the same batch: the time the run spent inside llama_decode
    (the engine accumulates it) against its wall time; goal >= 0.90. A bare loop of llama_decode
    calls on the same batch shape is printed too, as an outside check of that ceiling;
  - ratio to llama-cpp-python's create_completion loop with logprobs=5 (logits_all=True; measured on
    a few tokens only, it is ~2 tok/s; goal >= 60x) and without logprobs (goal >= 2.5x);
  - time to the first streamed token on a node whose parent path is resident, as a multiple of
    one decode step; goal <= 3x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loom.engine.engine import Engine
from loom.engine.models import default_model_path
from loom.engine.results import StepUpdate
from loom.engine.sampling import SamplerSettings

TEXT = (
    "The lighthouse keeper had not spoken to another person in eleven weeks when the boat "
    "arrived. It came in on the grey morning tide, low in the water, its single sail patched "
    "with what looked like a tablecloth. He watched it from the gallery with his coffee going "
    "cold in his hands, and he tried to remember the last time anyone had come without being "
    "sent for. The supply ship came on the first of every month; the inspector came in spring. "
    "This was neither. The figure at the tiller wore a yellow oilskin too big for them, and "
    "when they looked up at the tower they raised one hand, not in greeting exactly, but the "
    "way you might show a dog that you are not holding a stick. He went down the spiral stairs "
    "slowly, counting them as he always did, one hundred and twelve, and by the time he reached "
    "the door the stranger had already tied up at the jetty and was standing on the rocks with "
    "a canvas bag over one shoulder, looking at the gulls as if they owed money. "
)


def _prompt(engine: Engine, n_tokens: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids = engine.tokenize(TEXT * (1 + n_tokens // 150))
    return ids[:n_tokens]


def engine_run(engine: Engine, prompt: list[int], n: int, t: int) -> dict[str, float]:
    """One generate call, split into its prompt part and its step loop via on_step timestamps."""
    engine.clear_cache()
    engine.reset_stats()
    marks: list[tuple[float, float]] = []  # (wall clock, decode seconds) at each step

    def on_step(_: StepUpdate) -> None:
        marks.append((time.perf_counter(), engine.stats.decode_seconds))

    # seed 2: no branch meets EOS before 64 tokens on this prompt, so every step is a full batch
    settings = SamplerSettings(temperature=1.0, max_tokens=t, seed=2)
    start = time.perf_counter()
    branches = engine.generate(prompt, n, settings, top_logprobs=5, on_step=on_step)
    end = time.perf_counter()
    decode_total = engine.stats.decode_seconds
    tokens = sum(len(b.tokens) for b in branches)
    # steady state: from the first streamed step (prompt done, step 0 sampled) to the end
    loop_wall = end - marks[0][0]
    loop_decode = decode_total - marks[0][1]
    loop_tokens = tokens - n  # step 0's tokens came from the prompt's row
    steps = len(marks) - 1
    return {
        "tokens": tokens,
        "wall": end - start,
        "tok_s": tokens / (end - start),
        "loop_tok_s": loop_tokens / loop_wall,
        "ceiling_tok_s": loop_tokens / loop_decode,
        "ratio": loop_decode / loop_wall,
        "step_s": loop_wall / max(steps, 1),
        "decode_step_s": loop_decode / max(steps, 1),
        "overhead_ms": 1000 * (loop_wall - loop_decode) / max(steps, 1),
    }


def bare_decode_loop(engine: Engine, prompt: list[int], n: int, t: int) -> float:
    """tokens/s of llama_decode alone on the same batch shape (no analysis, argmax-free feed)."""
    engine.clear_cache()
    rt = engine.runtime
    full = engine._with_bos(prompt)
    for i in range(0, len(full), rt.n_batch):
        chunk = full[i : i + rt.n_batch]
        pos = list(range(i, i + len(chunk)))
        assert rt.decode(chunk, pos, [0] * len(chunk), [False] * len(chunk)) == 0
    for s in range(1, n):
        rt.seq_cp(0, s, len(full))
    tok = [full[-1]] * n
    start = time.perf_counter()
    for step in range(t):
        assert rt.decode(tok, [len(full) + step] * n, list(range(n)), [True] * n) == 0
        rt.logits(n)
    elapsed = time.perf_counter() - start
    engine.clear_cache()
    return n * t / elapsed


def completion_rate(path: Path, text: str, *, logprobs: int | None, tokens: int) -> float:
    """Streamed tokens/s of llama-cpp-python's high-level create_completion (after the first
    token, so prompt processing is excluded)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path), n_ctx=512, n_batch=256, n_threads=2, n_threads_batch=2,
        logits_all=logprobs is not None, verbose=False,
    )  # fmt: skip
    stamps = []
    for _ in llm.create_completion(
        text, max_tokens=tokens, temperature=1.0, seed=1, logprobs=logprobs, stream=True
    ):
        stamps.append(time.perf_counter())
    del llm
    return (len(stamps) - 2) / (stamps[-2] - stamps[0])  # the last chunk only carries finish


def first_token_latency(engine: Engine, prompt: list[int], n: int) -> list[float]:
    """Seconds from generate() to the first streamed step, walking down the tree: each request
    extends a branch the previous request just produced, so its parent path is resident."""
    path = list(prompt)
    parent = engine.generate(path, n, SamplerSettings(max_tokens=16, seed=7))[0]
    out = []
    for depth in range(4):
        path = path + [int(x) for x in parent.tokens.ids]
        resident = any(r[1 : len(path)] == path[:-1] for r in engine.resident_prefixes())
        assert resident, "the parent path should be in the KV cache"
        seen: list[float] = []
        start = time.perf_counter()
        parent = engine.generate(
            path, n, SamplerSettings(max_tokens=16, seed=depth),
            on_step=lambda _u, seen=seen: seen.append(time.perf_counter()),
        )[0]  # fmt: skip
        out.append(seen[0] - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--branches", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3, help="engine runs; the median is reported")
    args = ap.parse_args()
    n, t = args.branches, args.tokens

    path = default_model_path(lambda d, total: None)
    engine = Engine.load(path, n_ctx=2048, n_seq_max=16)
    prompt = _prompt(engine, args.prompt_tokens)
    engine.generate(prompt[:20], n, SamplerSettings(max_tokens=4, seed=0))  # warm-up

    runs = [engine_run(engine, prompt, n, t) for _ in range(args.runs)]
    run = sorted(runs, key=lambda r: r["loop_tok_s"])[len(runs) // 2]
    bare = bare_decode_loop(engine, prompt, n, t)
    latencies = first_token_latency(engine, prompt, n)
    ttft = statistics.median(latencies)
    text = engine.detokenize(prompt)
    engine.close()

    cc_lp = completion_rate(path, text, logprobs=5, tokens=4)
    cc_plain = completion_rate(path, text, logprobs=None, tokens=32)

    ratio = run["ratio"]
    r_lp = run["loop_tok_s"] / cc_lp
    r_plain = run["loop_tok_s"] / cc_plain
    ttft_steps = ttft / run["step_s"]
    ms = ", ".join(f"{1000 * x:.0f}" for x in latencies)
    all_runs = ", ".join(f"{r['loop_tok_s']:.1f}" for r in runs)
    lines = [
        f"branch throughput: {n} branches x {t} tokens, {len(prompt)}-token prompt, top-5 on",
        f"  engine, whole call (prompt included) : {run['tok_s']:7.1f} tok/s"
        f"  ({run['tokens']:.0f} tokens in {run['wall']:.2f} s)",
        f"  engine, generation steps             : {run['loop_tok_s']:7.1f} tok/s"
        f"  (median of {len(runs)} runs: {all_runs})",
        f"    one step {1000 * run['step_s']:.1f} ms = decode {1000 * run['decode_step_s']:.1f} ms"
        f" + Python {run['overhead_ms']:.1f} ms",
        f"  decode-only ceiling (inside decode)  : {run['ceiling_tok_s']:7.1f} tok/s",
        f"  bare llama_decode loop, same batch   : {bare:7.1f} tok/s",
        f"  create_completion, logprobs=5        : {cc_lp:7.2f} tok/s",
        f"  create_completion, no logprobs       : {cc_plain:7.1f} tok/s",
        f"  first token, parent path resident    : {1000 * ttft:7.1f} ms  (runs: {ms} ms)",
        "goals:",
        _goal("ratio to decode-only ceiling", ratio, ">= 0.90", ratio >= 0.90),
        f"    (ratio to the bare decode loop: {run['loop_tok_s'] / bare:.3f})",
        _goal("x create_completion, logprobs=5", r_lp, ">= 60", r_lp >= 60),
        _goal("x create_completion, no logprobs", r_plain, ">= 2.5", r_plain >= 2.5),
        _goal("first token / decode step", ttft_steps, "<= 3", ttft_steps <= 3),
    ]
    print("\n".join(lines))


def _goal(name: str, value: float, target: str, ok: bool) -> str:
    return f"  {name:<34} {value:8.2f}  (goal {target:>7})  {'met' if ok else 'NOT met'}"


if __name__ == "__main__":
    main()
