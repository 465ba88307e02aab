"""TUI latency on a small and a huge loom: keypress-to-frame for navigation, and first frame.

    python bench/tui_latency.py                    # 100 vs 100k nodes (builds once, ~2 min)
    python bench/tui_latency.py --large 20000      # quicker
    python bench/tui_latency.py --keep DIR         # keep/reuse the built looms in DIR

The large loom is built with bench/store_scale.py's builder (realistic 48-token nodes with top-5
alternatives, grown in batches of 8 the way a session grows); the small one from the same
generator with its current node as deep as the large one's, so both walks read equally long
paths and the comparison measures the size of the loom alone. The app runs headless; a frame
is the moment Textual hands a screen update to the (headless) driver. Goal: large/small ≤ 1.5×.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from store_scale import BATCH, Generator, build  # noqa: E402 — bench/ is not a package

from loom.app.session import Session  # noqa: E402
from loom.config import parse_config  # noqa: E402
from loom.store.loom import Loom  # noqa: E402
from loom.tui.app import LoomApp  # noqa: E402
from loom.tui.launch import tune_gc  # noqa: E402

SIZE = (120, 40)
# A walk a user might take: up and down siblings, into children and out, across leaves.
WALK = (["down"] * 6 + ["up"] * 6 + ["left"] * 4 + ["right"] * 4
        + ["right_square_bracket"] * 6 + ["left_square_bracket"] * 6) * 3  # fmt: skip


class FrameClock:
    """Records when the app hands a frame to the driver (wraps App._display)."""

    def __init__(self, app: LoomApp) -> None:
        self.times: list[float] = []
        display = app._display

        def timed_display(*args: object, **kwargs: object) -> None:
            display(*args, **kwargs)  # type: ignore[arg-type]
            self.times.append(time.perf_counter())

        app._display = timed_display  # type: ignore[method-assign]

    async def first_after(self, t0: float, timeout: float = 2.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            after = [t for t in self.times if t > t0]
            if after:
                return after[0] - t0
            await asyncio.sleep(0.001)
        return float("nan")


async def measure(path: Path) -> dict[str, float | list[float]]:
    loom = Loom.open(path)
    config = parse_config({})
    started = time.perf_counter()
    app = LoomApp(Session(loom), config, load_model=False)
    app.animation_level = "none"
    clock = FrameClock(app)
    latencies: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        first_frame = await clock.first_after(started, timeout=30)
        await pilot.pause()
        for key in WALK:
            t0 = time.perf_counter()
            await pilot.press(key)
            latencies.append(await clock.first_after(t0))
    loom.close()
    return {"first_frame": first_frame, "keys": [x for x in latencies if x == x]}


def ensure_loom(folder: Path, n_nodes: int) -> Path:
    path = folder / f"tui-bench-{n_nodes}.loom"
    if not path.exists():
        print(f"building a {n_nodes}-node loom in {folder} …", flush=True)
        start = time.perf_counter()
        build(path, n_nodes, seed=n_nodes)
        print(f"  built in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def current_depth(path: Path) -> tuple[int, int]:
    with Loom.open(path, readonly=True) as loom:
        nodes = loom.path_nodes(loom.current)
        return len(nodes) - 1, sum(len(n.tokens) for n in nodes)


def ensure_matched_loom(folder: Path, n_nodes: int, depth: int) -> Path:
    """A small loom whose current node is as deep as the large loom's: a spine of `depth`
    generated nodes with siblings hung along it up to `n_nodes`, so both walks read paths of
    the same length and the comparison is about the size of the loom alone."""
    path = folder / f"tui-bench-{n_nodes}-depth{depth}.loom"
    if path.exists():
        return path
    gen = Generator(n_nodes)
    with Loom.create(path, title="matched", prompt="Bob sat down at the cafe.") as loom:
        spine = [loom.root_id]
        per_level = max(1, (n_nodes - depth) // max(1, depth))
        added = 0
        for _level in range(depth):
            batch = gen.batch()[: 1 + min(per_level, BATCH - 1)]
            ids = loom.add_children(spine[-1], batch)
            added += len(ids)
            spine.append(ids[0])
        while added < n_nodes:  # the rest as extra leaves along the spine
            ids = loom.add_children(spine[added % depth], gen.batch()[:1])
            added += len(ids)
        loom.set_current(spine[-1])
    return path


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return statistics.median(ordered) * 1e3, p95 * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="build/reuse looms here")
    parser.add_argument("--rounds", type=int, default=3, help="walks per loom (alternated)")
    parser.add_argument(
        "--small-shape",
        choices=("matched", "builder"),
        default="matched",
        help="matched: the small loom's path as deep as the large one's (default); "
        "builder: store_scale's shape (a short path: also measures a fuller screen)",
    )
    args = parser.parse_args()
    os.environ.setdefault("LOOM_CONFIG", os.devnull + ".toml")  # defaults, not the user's

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        large = ensure_loom(folder, args.large)
        depth, _tokens = current_depth(large)
        small = (
            ensure_matched_loom(folder, args.small, depth)
            if args.small_shape == "matched"
            else ensure_loom(folder, args.small)
        )
        paths = {"small": small, "large": large}
        shapes = {label: current_depth(path) for label, path in paths.items()}
        tune_gc()  # as run_app does
        for path in paths.values():
            asyncio.run(measure(path))  # warm-up: imports, CSS parsing, SQLite page cache
        # Alternate the looms so that a burst of load elsewhere on the machine hits both.
        runs: dict[str, list[dict[str, float | list[float]]]] = {"small": [], "large": []}
        for _ in range(args.rounds):
            for label, path in paths.items():
                runs[label].append(asyncio.run(measure(path)))
        results = {
            label: {
                "keys": [k for r in rs for k in r["keys"]],  # type: ignore[union-attr]
                "first_frame": statistics.median(float(r["first_frame"]) for r in rs),  # type: ignore[arg-type]
            }
            for label, rs in runs.items()
        }

    small, large = results["small"], results["large"]
    s_med, s_p95 = summary(small["keys"])  # type: ignore[arg-type]
    l_med, l_p95 = summary(large["keys"])  # type: ignore[arg-type]
    s_first = float(small["first_frame"]) * 1e3  # type: ignore[arg-type]
    l_first = float(large["first_frame"]) * 1e3  # type: ignore[arg-type]
    print()
    print(
        f"{len(WALK)} navigation keys x {args.rounds} rounds per loom "
        f"({SIZE[0]}x{SIZE[1]} terminal, headless); walks start at the current node:"
    )
    for label, (depth, tokens) in shapes.items():
        print(f"  {label}: depth {depth}, {tokens} tokens on the path")
    print(f"{'measure':<36}{args.small:>10} nodes{args.large:>10} nodes{'large/small':>13}")
    rows = [
        ("keypress → frame, median (ms)", s_med, l_med),
        ("keypress → frame, p95 (ms)", s_p95, l_p95),
        ("start → first frame (ms)", s_first, l_first),
    ]
    for name, a, b in rows:
        print(f"{name:<36}{a:>16.1f}{b:>16.1f}{b / a:>12.2f}×")
    ok = l_med / s_med <= 1.5
    print(f"\ngoal: navigation on the large loom ≤ 1.5× the small one: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
