"""How the store scales: a small and a large loom, built and measured through the public API.

    python bench/store_scale.py                 # 1k vs 100k nodes
    python bench/store_scale.py --large 20000   # a quicker run

Each node carries realistic tokens: ~48 tokens with logprobs, entropy and top-5 alternatives.
Both looms are built the way the app grows one: `add_children` batches of 8 (one generation
each) under a node chosen the way a user wanders (mostly the newest branch, sometimes anywhere).
Prints absolute times and the large/small ratios:
  open    open + header(root) + children(root) + node(current): should not grow with the tree
  append  1k more generated nodes (batches of 8)
  file    bytes of the .loom per node, as built
  export  `loom export L --format loom-json -o F` (version 2), run under /usr/bin/time -v:
          wall time and peak resident memory measured from outside the process
  import  `loom import F -o L2`, the same way, and the peak of the import and its worker
          processes together (it reads a large file's nodes in a pool of them), summed over the
          process tree from /proc every 20 ms
  same    the imported loom is the original: tree, text, tokens (ids, texts, logprobs, top-k,
          entropy), labels, bookmarks, tags, and the original's events (censuses among them)
          as the first events of the import's log
Goals at the large size: export <= 15 s and <= 400 MB, import <= 30 s and <= 600 MB, the round
trip identical, the file <= 3 KB a node; the open ratio <= 3.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loom.store import codec
from loom.store import events as ev
from loom.store.loom import Loom, NewNode
from loom.store.model import GenerationSettings
from loom.tokens import TokenArray

VOCAB = 32_000
N_TOKENS = 48
TOP_K = 5
BATCH = 8

GEN = GenerationSettings(
    model="gemma-3-270m-q4_k_m.gguf",
    # A hash like a real model's: 64 zeros are a run of digits that the JSON reader takes for a
    # possibly huge number, sending every line to the exact (slow) parser.
    model_sha256=hashlib.sha256(b"gemma-3-270m-q4_k_m.gguf").hexdigest(),
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
    seed=None,
    max_tokens=N_TOKENS,
    batch_size=BATCH,
)


class Generator:
    """Fake model output with the shape and variety of the real thing."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        syllables = ["an", "the", "ro", "mi", "ck", "ou", "sa", "int", "er", "el", "qu", "y"]
        self.vocab = [
            (" " if i % 3 == 0 else "")
            + "".join(syllables[(i >> s) % 12] for s in (0, 4, 8))[: 2 + i % 6]
            for i in range(VOCAB)
        ]

    def tokens(self) -> TokenArray:
        rng = self.rng
        n = int(rng.integers(N_TOKENS - 8, N_TOKENS + 9))
        # Zipf-like ids: a few frequent tokens, a long tail.
        top_ids = (rng.pareto(1.1, size=(n, TOP_K)) * 50).astype(np.int64) % VOCAB
        top_ids = top_ids.astype(np.int32)
        top_lps = -np.sort(rng.exponential(1.5, size=(n, TOP_K)), axis=1).astype(np.float32)
        pick = np.where(rng.random(n) < 0.8, 0, rng.integers(0, TOP_K, n))
        ids = top_ids[np.arange(n), pick]
        texts = [self.vocab[i] for i in ids.tolist()]
        vocab = self.vocab
        return TokenArray(
            ids=ids,
            texts=texts,
            logprobs=top_lps[np.arange(n), pick].copy(),
            top_ids=top_ids,
            top_logprobs=top_lps,
            top_texts={i: vocab[i] for i in set(top_ids.ravel().tolist())},
            entropy=rng.uniform(0, 4, n).astype(np.float32),
        )

    def batch(self) -> list[NewNode]:
        out = []
        for _ in range(BATCH):
            tokens = self.tokens()
            out.append(NewNode(tokens.text, tokens=tokens, author="model", generation=GEN))
        return out


def grow(lm: Loom, gen: Generator, n_nodes: int, parents: list[int]) -> float:
    """Add `n_nodes` in batches of 8 the way a session does; returns seconds spent in the store."""
    rng = gen.rng
    spent = 0.0
    added = 0
    while added < n_nodes:
        if rng.random() < 0.7 and len(parents) > 1:
            parent = parents[-1 - int(rng.integers(0, min(len(parents) - 1, BATCH)))]
        else:
            parent = parents[int(rng.integers(0, len(parents)))]
        nodes = gen.batch()
        start = time.perf_counter()
        ids = lm.add_children(parent, nodes)
        spent += time.perf_counter() - start
        parents.extend(ids)
        added += len(ids)
    return spent


def build(path: Path, n_nodes: int, seed: int) -> list[int]:
    gen = Generator(seed)
    with Loom.create(path, title=f"{n_nodes} nodes", prompt="Bob sat down at the cafe.") as lm:
        parents = [lm.root_id]
        last = time.perf_counter()
        while len(parents) - 1 < n_nodes:
            grow(lm, gen, min(5_000, n_nodes - (len(parents) - 1)), parents)
            if time.perf_counter() - last > 10:
                print(f"  … {len(parents) - 1} nodes", flush=True)
                last = time.perf_counter()
        lm.set_current(parents[-1])
    return parents


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def open_and_show(path: Path) -> None:
    with Loom.open(path) as lm:
        lm.header(lm.root_id)
        lm.children(lm.root_id)
        lm.node(lm.current)


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants now (kB, from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue  # gone meanwhile
    return total


def measured(*argv: str | Path) -> tuple[float, float, float]:
    """(wall seconds, peak resident MB, peak MB of it and its worker processes together) of one
    `loom` command, measured from outside it: /usr/bin/time -v gives the first two (its peak is
    of the largest single process), /proc sampled every 20 ms the sum over the process tree."""
    loom = shutil.which("loom") or str(Path(sys.executable).with_name("loom"))
    proc = subprocess.Popen(
        ["/usr/bin/time", "-v", loom, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    peak_tree = 0

    def sample() -> None:
        nonlocal peak_tree
        while proc.poll() is None:
            peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"loom {' '.join(map(str, argv))} failed:\n{err}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err)
    assert rss and wall, err
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return seconds, int(rss.group(1)) / 1024, peak_tree / 1024


def _digest(tokens: TokenArray) -> str:
    return codec.encode(tokens).digest.hex()


def differences(original: Path, imported: Path) -> list[str]:
    """How `imported` differs from `original`, streamed node by node (bounded memory)."""
    out: list[str] = []
    with (
        Loom.open(original, readonly=True) as a,
        Loom.open(imported, readonly=True) as b,
        a.exporting() as sa,
        b.exporting() as sb,
    ):
        for name in ("title", "root", "current", "personas", "meta"):
            if getattr(sa.head, name) != getattr(sb.head, name):
                out.append(f"{name} differs")
        if sa.n_nodes != sb.n_nodes:
            out.append(f"{sa.n_nodes} vs {sb.n_nodes} nodes")
        fields = ("id", "parent", "author", "text", "created_at", "generation", "persona")
        fields += ("manual_persona", "bookmarked", "pruned", "tags", "meta")
        for x, y in zip(sa.nodes(), sb.nodes(), strict=False):
            for name in fields:
                if getattr(x.node, name) != getattr(y.node, name):
                    out.append(f"node {x.node.id}: {name} differs")
            if _digest(x.node.tokens) != _digest(y.node.tokens):
                out.append(f"node {x.node.id}: tokens differ")
            if len(out) > 10:
                return out

        def by_digest(stream: object) -> object:
            def convert(value: dict[str, object]) -> object:
                return {"digest": _digest(stream.tokens(int(value[ev.TOKEN_REF])))}  # type: ignore[attr-defined,call-overload]

            return convert

        n_events = 0
        for x, y in zip(sa.events(), sb.events(), strict=False):
            n_events += 1
            if ev.map_tokens(x, by_digest(sa)) != ev.map_tokens(y, by_digest(sb)):
                out.append(f"event {x['seq']} differs")
                break
        if n_events != sa.n_events:
            out.append(f"only {n_events} of {sa.n_events} events carried")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1_000, help="nodes in the small loom")
    parser.add_argument("--large", type=int, default=100_000, help="nodes in the large loom")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results: dict[str, dict[str, float]] = {}
        for label, size in (("small", args.small), ("large", args.large)):
            path = Path(tmp) / f"{label}.loom"
            print(f"building {label}: {size} nodes …", flush=True)
            start = time.perf_counter()
            parents = build(path, size, seed=size)
            build_s = time.perf_counter() - start
            r: dict[str, float] = {"build": build_s, "bytes": path.stat().st_size, "size": size}
            r["open"] = timed(lambda p=path: open_and_show(p), repeat=15)
            with Loom.open(path) as lm:
                r["append_1k"] = grow(lm, Generator(7), 1_000, parents)
                r["stats"] = timed(lm.stats, repeat=3)
                r["nodes"] = lm.stats()["nodes"]
            out = Path(tmp) / f"{label}.json"
            r["export_s"], r["export_mb"], r["export_tree_mb"] = measured(
                "export", path, "--format", "loom-json", "-o", out
            )
            r["json_bytes"] = out.stat().st_size
            again = Path(tmp) / f"{label}-again.loom"
            r["import_s"], r["import_mb"], r["import_tree_mb"] = measured(
                "import", out, "-o", again
            )
            problems = differences(path, again)
            r["same"] = 0.0 if problems else 1.0
            for problem in problems:
                print(f"  round trip: {problem}")
            out.unlink()
            again.unlink()
            results[label] = r
            print(
                f"  {label:5} {size:>7} nodes  file {r['bytes'] / 1e6:8.1f} MB"
                f" ({r['bytes'] / size:.0f} B/node)  build {build_s:7.1f} s"
                f"  ({build_s / size * 1e3:.2f} ms/node)  loom-json {r['json_bytes'] / 1e6:.1f} MB",
                flush=True,
            )

    small, large = results["small"], results["large"]
    print()
    print(f"{'measure':<34}{'small':>12}{'large':>12}{'large/small':>13}")
    rows = [
        ("open + root + children + current", "open", 1e3, "ms"),
        ("append 1k nodes (batches of 8)", "append_1k", 1, "s"),
        ("stats() (full scan)", "stats", 1e3, "ms"),
        (".loom bytes per node", "per_node", 1, "B"),
        ("loom export loom-json (v2)", "export_s", 1, "s"),
        ("  peak resident memory", "export_mb", 1, "MB"),
        ("loom import of that file", "import_s", 1, "s"),
        ("  peak resident memory", "import_mb", 1, "MB"),
        ("  peak with its worker processes", "import_tree_mb", 1, "MB"),
        ("round trip identical (1 = yes)", "same", 1, ""),
    ]
    for r in results.values():
        r["per_node"] = r["bytes"] / r["size"]
    for name, key, scale, unit in rows:
        a, b = small[key] * scale, large[key] * scale
        print(
            f"{name:<34}{a:>9.2f} {unit:<2}{b:>9.2f} {unit:<2}{b / a if a else float('nan'):>12.2f}"
        )
    ratio = large["open"] / small["open"]
    goals = [
        (f"open ratio {ratio:.2f} (goal ≤ 3)", ratio <= 3),
        (f"export {large['export_s']:.1f} s (goal ≤ 15)", large["export_s"] <= 15),
        (f"export peak {large['export_mb']:.0f} MB (goal ≤ 400)", large["export_mb"] <= 400),
        (f"import {large['import_s']:.1f} s (goal ≤ 30)", large["import_s"] <= 30),
        (
            f"import peak {large['import_tree_mb']:.0f} MB, its workers included (goal ≤ 600)",
            large["import_tree_mb"] <= 600,
        ),
        ("round trip identical", small["same"] == 1 and large["same"] == 1),
        (f".loom {large['per_node']:.0f} B/node (goal ≤ 3000)", large["per_node"] <= 3000),
    ]
    print()
    for text, ok in goals:
        print(f"{text}: {'ok' if ok else 'MISSED'}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
