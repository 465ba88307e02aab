"""The application layer of the reading aids without a UI: the child filter's expressions, sibling
orders, the hoist stack, reading progress from the log's visits and the walk to the next unread
node, and the store's view settings (kept, never logged, in memory for a read-only loom)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from support.store import WordTokenizer, model_tokens

from loom.app.hoist import Hoist, HoistError, breadcrumb
from loom.app.navigation import View
from loom.app.reading import FilterError, next_unread, parse_filter
from loom.app.session import Session
from loom.store.loom import Loom, NewNode


def grown(path: Path) -> tuple[Loom, dict[str, int]]:
    """root ─┬─ a ─┬─ a1
    │     └─ a2
    ├─ b
    └─ c (human)"""
    loom = Loom.create(path, prompt="Hello", tokenizer=WordTokenizer())
    nodes = [NewNode(f" {n} x", model_tokens(f" {n} x", seed=i), "model")
             for i, n in enumerate(("a", "b"))]  # fmt: skip
    a, b = loom.add_children(loom.root_id, nodes)
    c = loom.add_child(loom.root_id, " c by hand", author="human")
    a1, a2 = loom.add_children(a, [NewNode(f" {n}", model_tokens(f" {n}", seed=9 + i), "model")
                                   for i, n in enumerate(("a1", "a2"))])  # fmt: skip
    return loom, {"root": loom.root_id, "a": a, "b": b, "c": c, "a1": a1, "a2": a2}


def test_filter_expressions() -> None:
    f = parse_filter("mean >= 20%")
    assert (f.criterion, f.op) == ("mean", ">=") and f.threshold == pytest.approx(math.log(0.2))
    assert f.describe() == f"mean ≥ {math.log(0.2):.2f} (20%)"
    assert parse_filter("H<2").criterion == "entropy"
    assert parse_filter("cum > -40").threshold == -40
    for bad, says in [("loudness > 1", "unknown criterion"), ("mean", "cannot read"),
                      ("mean >= 1", "at most 0"), ("entropy < -1", "at least 0"),
                      ("entropy >= 50%", "percentage")]:  # fmt: skip
        with pytest.raises(FilterError, match=says):
            parse_filter(bad)


def test_orders_filters_and_human_text(tmp_path: Path) -> None:
    loom, ids = grown(tmp_path / "t.loom")
    session = Session(loom)
    kids = [ids["a"], ids["b"], ids["c"]]
    entropy = session.mean_entropies(kids)
    assert entropy[ids["c"]] is None  # hand-written text has no entropy
    by_entropy = [c.id for c in session.children(ids["root"], View("entropy"))]
    assert by_entropy == [*sorted(kids[:2], key=lambda k: entropy[k] or 0.0), ids["c"]]
    shuffled = [c.id for c in session.children(ids["root"], View("shuffled", seed=3))]
    assert sorted(shuffled) == sorted(kids)
    assert shuffled == [c.id for c in session.children(ids["root"], View("shuffled", seed=3))]
    low, high = sorted(kids[:2], key=lambda k: entropy[k] or 0.0)
    f = parse_filter(f"entropy <= {((entropy[low] or 0.0) + (entropy[high] or 0.0)) / 2}")
    kept = [c.id for c in session.children(ids["root"], View(entropy=True)) if f.keeps(c)]
    assert kept == [low, ids["c"]]  # human text always stays
    loom.close()


def test_hoist_stack(tmp_path: Path) -> None:
    loom, ids = grown(tmp_path / "t.loom")
    session = Session(loom)
    hoist = Hoist()
    with pytest.raises(HoistError, match="the root"):
        hoist.push(session.path_headers(ids["root"]))
    hoist.push(session.path_headers(ids["a"]))
    hoist.push(session.path_headers(ids["a1"]))
    assert hoist.top(ids["root"]) == ids["a1"] and hoist.contains([1, ids["a"], ids["a1"]])
    assert (
        breadcrumb(session.path_headers(ids["a1"])) == f"root › #{ids['a']} a x › #{ids['a1']} a1"
    )
    assert hoist.widen_to([ids["root"], ids["b"]]) == 2 and not hoist.active
    loom.prune(ids["a"])
    with pytest.raises(HoistError, match=f"under pruned node {ids['a']}"):
        hoist.push(session.path_headers(ids["a2"]))
    assert hoist.stack == []
    hoist.stack = [ids["b"], ids["a"]]
    assert hoist.settle({ids["a"], ids["b"]}, {ids["a"]}) and hoist.stack == [ids["b"]]
    session.save_hoist(hoist)
    events = len(loom.events())
    assert loom.view_state("hoist") == [ids["b"]] and len(loom.events()) == events
    loom.close()
    with Loom.open(tmp_path / "t.loom", readonly=True) as ro:
        assert Session(ro).hoist().stack == [ids["b"]]
        ro.set_view_state("hoist", [])  # a read-only loom keeps it in memory
        assert ro.view_state("hoist") == []
    with Loom.open(tmp_path / "t.loom", readonly=True) as ro:
        assert ro.view_state("hoist") == [ids["b"]]


def test_reading_progress_and_the_next_unread(tmp_path: Path) -> None:
    loom, ids = grown(tmp_path / "t.loom")
    session = Session(loom)
    assert loom.visited_paths() == {ids["root"]}
    session.set_place(ids["a1"])  # stopping on a1 reads its path
    assert loom.visited_paths() == {ids["root"], ids["a"], ids["a1"]}
    unread, with_unread = session.unread()
    assert unread == {ids["a2"], ids["b"], ids["c"]}
    assert with_unread == unread | {ids["root"], ids["a"]}

    def children(node_id: int) -> list:  # type: ignore[type-arg]
        return session.children(node_id, View())

    path = [ids["root"], ids["a"], ids["a1"]]
    assert next_unread(ids["a1"], ids["root"], path, with_unread, unread, children) == ids["a2"]
    path_b = [ids["root"], ids["b"]]
    assert next_unread(ids["b"], ids["root"], path_b, with_unread, unread, children) == ids["c"]
    path_c = [ids["root"], ids["c"]]
    # from the last one it wraps round to the first
    assert next_unread(ids["c"], ids["root"], path_c, with_unread, unread, children) == ids["a2"]
    # inside a hoist on a: only a2
    in_a = [*path[:2], ids["a2"]]
    assert next_unread(ids["a2"], ids["a"], in_a, with_unread, {ids["a2"]}, children) is None
    # pruned nodes are not listed; a removed node's visit no longer counts
    loom.prune(ids["b"])
    assert session.unread()[0] == {ids["a2"], ids["c"]}
    loom.close()
    with Loom.open(tmp_path / "t.loom") as again:  # kept in the file, by the log's visits
        assert again.visited_paths() == {ids["root"], ids["a"], ids["a1"]}
        assert not again.can_redo and [e.kind for e in again.events()].count("visit") == 1
