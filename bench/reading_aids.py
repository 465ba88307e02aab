"""What the reading aids cost on a large loom (no model: synthetic tokens with entropy).

    python bench/reading_aids.py [--nodes 20000] [--fanout 4] [--visits 2000]

Prints, for a loom of N nodes (a tree of the given fan-out) with V visits in its log:
  - reading progress: the first `visited_paths` (one recursive query over the log's visits);
  - `Session.unread` (the parent map and the unread set with its ancestors);
  - the next unread node from the root (`reading.next_unread`, a walk of a few levels);
  - the children of a node sorted by mean entropy (token arrays read), cold and cached.
Goals: each under 0.5 s at 20k nodes, the next unread under 50 ms, a sorted fan-out under 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.store import model_tokens

from loom.app.navigation import View
from loom.app.reading import next_unread
from loom.app.session import Session
from loom.store.loom import Loom, NewNode


def timed(what: str, fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    print(f"{what:<44} {1000 * (time.perf_counter() - start):8.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--fanout", type=int, default=4)
    parser.add_argument("--visits", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        loom = Loom.create(Path(tmp) / "big.loom", prompt="Once")
        frontier, made = [loom.root_id], 1
        with loom.batch():
            while made < args.nodes:
                parent = frontier.pop(0)
                kids = loom.add_children(parent, [
                    NewNode(f" w{made + i} x", model_tokens(f" w{made + i} x", seed=made + i),
                            "model") for i in range(args.fanout)
                ])  # fmt: skip
                frontier.extend(kids)
                made += len(kids)
        leaves = frontier[: args.visits]
        for leaf in leaves:
            loom.set_current(leaf)
        print(f"{made} nodes, {len(leaves)} visits")
        session = Session(loom)
        timed("visited_paths (reading progress)", loom.visited_paths)
        unread, with_unread = timed("Session.unread", session.unread)
        root = loom.root_id
        timed(
            "next unread from the root",
            lambda: next_unread(
                root, root, [root], with_unread, unread, lambda i: session.children(i, View())
            ),
        )
        timed("children by entropy (cold)", lambda: session.children(root, View("entropy")))
        timed("children by entropy (cached)", lambda: session.children(root, View("entropy")))
        loom.close()


if __name__ == "__main__":
    main()
