"""Remote generation throughput: N branches at once vs one after another, same server, same run.

    python bench/remote_throughput.py [--branches 8] [--tokens 64] [--prompt-tokens 200]
                                      [--slots 8] [--rounds 4] [--url URL] [--server PATH]
                                      [--no-ceiling]

Starts llama.cpp's llama-server (the binary the tests use, tests/support/llama_server.py, or
--server PATH) on loopback with --slots parallel slots and the default model, unless --url names a
running server. Each round runs the same generation (N branches x T tokens from a ~P-token prompt,
top-5 recorded, through loom's RemoteBackend) twice: with every branch's request sent at once
(concurrency N) and one request at a time (concurrency 1), alternating which goes first. Prints
tokens/s of each, the ratio per round and overall (total tokens / total wall time per mode), and
the CPU the machine had: the load average and the share of CPU time this server got.

Then, when the bench started the server itself, with the server idle, the same model
in-process: bare llama_decode steps of a batch of N sequences against a batch of 1
(bench/branch_throughput.py's loop). That ratio is what batching can give on this machine at
all, the ceiling of the concurrent/sequential ratio of any server running these kernels (skip it
with --no-ceiling).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from loom.engine.models import default_model_path  # noqa: E402
from loom.engine.remote import RemoteBackend  # noqa: E402
from loom.engine.sampling import SamplerSettings  # noqa: E402

SENTENCE = (
    "The old lighthouse keeper climbed the steps each morning, wiped the salt from the lens and "
    "wrote in his logbook the colour of the water and the direction of the wind. "
)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decode_ceiling(n: int, tokens: int, prompt_tokens: int) -> tuple[float, float]:
    """tokens/s of bare llama_decode steps, batch of n and batch of 1, same model, 2 threads."""
    from branch_throughput import _prompt, bare_decode_loop

    from loom.engine.engine import Engine

    engine = Engine.load(default_model_path(), n_ctx=2048, n_seq_max=max(16, n))
    try:
        prompt = _prompt(engine, prompt_tokens)
        bare_decode_loop(engine, prompt, n, 8)  # warm-up
        batched = statistics.median(bare_decode_loop(engine, prompt, n, tokens) for _ in range(3))
        single = statistics.median(bare_decode_loop(engine, prompt, 1, tokens) for _ in range(3))
    finally:
        engine.close()
    return batched, single


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--branches", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--url", help="a running server instead of starting llama-server")
    ap.add_argument("--server", help="the llama-server binary (default: the tests' one)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the in-process decode ceiling")
    args = ap.parse_args()

    proc: subprocess.Popen[bytes] | None = None
    server = None
    if args.url is None:
        import pytest  # the tests' helper reports a missing binary through pytest.fail
        from support.engines import free_port
        from support.llama_server import start_llama_server

        if args.server:
            os.environ["LOOM_LLAMA_SERVER"] = args.server
        log = Path(tempfile.mkdtemp(prefix="loom-bench-")) / "server.log"
        ctx = max(512, args.prompt_tokens + args.tokens + 64)
        try:
            server = start_llama_server(
                default_model_path(), free_port(), log, slots=args.slots, ctx_per_slot=ctx
            )
        except pytest.fail.Exception as exc:
            print(f"cannot start llama-server: {exc}", file=sys.stderr)
            return 1
        proc = server.process
        url, key = server.url, server.key
        print(f"server: {' '.join(str(a) for a in proc.args)}")  # type: ignore[union-attr]
    else:
        url, key = args.url, os.environ.get("LOOM_API_KEY")
    try:
        remote = RemoteBackend(url, key, timeout=600, concurrency=args.branches).connect()
        ids: list[int] = []
        while len(ids) < args.prompt_tokens:
            ids = remote.tokenize(SENTENCE * (1 + len(ids) // 20 + 1))
        prompt = remote.detokenize(ids[: args.prompt_tokens])
        print(f"model: {remote.info.name}")
        print(f"{args.branches} branches x {args.tokens} tokens, {args.prompt_tokens}-token prompt,"
              f" top-5, {args.rounds} rounds")  # fmt: skip
        settings = SamplerSettings(temperature=1.0, max_tokens=args.tokens)

        def run(concurrency: int, seed: int) -> tuple[float, int]:
            s = SamplerSettings(**{**settings.__dict__, "seed": seed})
            start = time.perf_counter()
            branches = remote.generate(
                None, args.branches, s, top_logprobs=5, prompt_text=prompt,
                concurrency=concurrency,
            )  # fmt: skip
            return time.perf_counter() - start, sum(len(b.tokens) for b in branches)

        run(args.branches, 0)  # warm-up: the prompt into the slots' caches
        totals = {"concurrent": [0.0, 0], "sequential": [0.0, 0]}
        ratios = []
        load_start = os.getloadavg()
        cpu_start = _cpu_seconds(proc.pid) if proc else None
        client_start = time.process_time()
        wall_start = time.perf_counter()
        for r in range(args.rounds):
            order = ["concurrent", "sequential"] if r % 2 == 0 else ["sequential", "concurrent"]
            rate = {}
            for mode in order:
                wall, n = run(args.branches if mode == "concurrent" else 1, 1000 + r)
                totals[mode][0] += wall
                totals[mode][1] += n
                rate[mode] = n / wall
                print(f"round {r} {mode:10s} {n} tokens in {wall:6.2f} s = {rate[mode]:6.1f} tok/s")
            ratios.append(rate["concurrent"] / rate["sequential"])
            print(f"round {r} ratio {ratios[-1]:.2f}x  (load average {os.getloadavg()[0]:.2f})")
        wall_all = time.perf_counter() - wall_start
        conc = totals["concurrent"][1] / totals["concurrent"][0]
        seq = totals["sequential"][1] / totals["sequential"][0]
        print(f"concurrent {conc:.1f} tok/s, sequential {seq:.1f} tok/s: {conc / seq:.2f}x "
              f"(per round: median {statistics.median(ratios):.2f}x, "
              f"min {min(ratios):.2f}x, max {max(ratios):.2f}x); goal >= 2.5x")  # fmt: skip
        load_end = os.getloadavg()
        print(f"cpu: {os.cpu_count()} cores; load average {load_start[0]:.2f} at start, "
              f"{load_end[0]:.2f} at end (1 min), {load_end[1]:.2f} (5 min)")  # fmt: skip
        if proc is not None and cpu_start is not None:
            share = (_cpu_seconds(proc.pid) - cpu_start) / wall_all
            print(f"the server got {share:.2f} CPU-seconds per second of the timed rounds "
                  f"(of {os.cpu_count()} possible)")  # fmt: skip
        client = (time.process_time() - client_start) / wall_all
        print(f"this client (loom's RemoteBackend) used {client:.2f} CPU-seconds per second")
        if proc is not None and not args.no_ceiling:  # the machine the bench's server ran on
            ceiling = decode_ceiling(args.branches, args.tokens, args.prompt_tokens)
            print(f"decode ceiling on this machine (in-process, bare llama_decode, same model): "
                  f"batch {args.branches} {ceiling[0]:.1f} tok/s, batch 1 {ceiling[1]:.1f} tok/s: "
                  f"{ceiling[0] / ceiling[1]:.2f}x; the server reached "
                  f"{conc / seq / (ceiling[0] / ceiling[1]):.0%} of it")  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
