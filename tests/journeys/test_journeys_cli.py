"""Journeys through the `loom` command: features chained in the order a person uses them, each
step a subprocess of the venv's console script on the real default model, each checked on what
it printed and on the loom file it left.

Steps the CLI has no command for (prune, undo, bookmark, a typed reply) go through the store
in-process, as the app does them (test_journeys_app.py takes the same journey with the keys).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    CROISSANT,
    DATA,
    all_ids,
    cli_env,
    event_kinds,
    ids_of,
    leaf_paths,
    ok,
    parse_timeline,
    run_loom,
    tokenizer,
    tree_record,
)

from loom.personas.sets import load_persona_set
from loom.store.loom import Loom
from loom.text import inert

pytestmark = pytest.mark.model
__all__ = ["tokenizer"]  # a fixture

REPLY = ' <i>Bob</i> & "croissants" </script><script>alert(1)</script>'


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    (folder / "sessions").mkdir(parents=True)
    shutil.copy(CROISSANT, folder / "sessions" / "croissant.toml")
    return folder


def embedded_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="loom-data">(.*?)</script>', page, re.S)
    assert match, "the page embeds no loom data"
    data: dict[str, Any] = json.loads(match[1])
    return data


def test_the_readmes_first_session(
    env: dict[str, str], work: Path, tokenizer: Any, tmp_path: Path
) -> None:
    def loom(*args: str) -> Any:
        return run_loom(*args, cwd=work, env=env)

    path = work / "croissant.loom"

    # loom new croissant.loom --personas sessions/croissant.toml
    ok(loom("new", "croissant.loom", "--personas", "sessions/croissant.toml"))
    persona_set = load_persona_set(CROISSANT)
    with Loom.open(path, readonly=True) as lm:
        assert lm.node(lm.root_id).text == persona_set.prompt
        assert [p.name for p in lm.personas] == ["luigi", "waluigi"]

    # three seeded branches of Bob's answer
    kids = ids_of(ok(loom("generate", "croissant.loom", "-n", "3", "--max-tokens", "8",
                          "--seed", "7")))  # fmt: skip
    assert len(kids) == 3

    # which persona does each voice?
    labelled = ok(loom("label", "croissant.loom"))
    assert sorted(int(line.split("\t")[0]) for line in labelled.stdout.splitlines()) == kids
    with Loom.open(path, readonly=True) as lm:
        assert all(lm.header(k).persona is not None for k in kids)

    # prune a branch and undo it, bookmark one, reply to it and go there (the app's keys)
    with Loom.open(path, tokenizer=tokenizer) as lm:
        lm.prune(kids[0])
        assert lm.header(kids[0]).pruned
        lm.undo()
        assert not lm.header(kids[0]).pruned
        lm.set_bookmark(kids[1], True)
        reply = int(lm.add_child(kids[1], REPLY, author="human"))
        lm.set_current(reply)
        events = lm.events()
        final = tree_record(lm)
    kinds = event_kinds(events)
    order = ["create", "personas", "add", "persona", "prune", "undo", "bookmark", "add", "visit"]
    at = 0
    for kind in order:  # the person's steps, in the order they took them
        at = kinds.index(kind, at) + 1

    # loom replay --headless: every event, in order, up to the final state
    timeline = parse_timeline(ok(loom("replay", "croissant.loom", "--headless")).stdout)
    assert [(seq, kind) for seq, kind, _n, _s in timeline] == [(e.seq, e.kind) for e in events]
    prune = next(t for t in timeline if t[1] == "prune")
    assert prune[2] == f"#{kids[0]}" and prune[3].endswith("(undone)")
    assert timeline[-1][1:3] == ("visit", f"#{reply}")
    # … and the loom as it was after the last event is the loom as it is
    ok(loom("fork", "croissant.loom", "--at", str(events[-1].seq), "-o", "now.loom"))
    with Loom.open(work / "now.loom", readonly=True) as now:
        assert tree_record(now) == final

    # export to loom-json and import it again: the same loom, every stored number exactly
    ok(loom("export", "croissant.loom", "--format", "loom-json", "-o", "croissant.json"))
    ok(loom("import", "croissant.json", "-o", "copy.loom"))
    with Loom.open(path, readonly=True) as a, Loom.open(work / "copy.loom", readonly=True) as b:
        assert tree_record(b) == tree_record(a) == final
        assert b.personas == a.personas and b.title == a.title and b.current == a.current
        assert b.bookmarks() == [kids[1]]
        exported, imported = a.to_document().events, b.to_document().events
        assert imported[:-1] == exported and imported[-1]["kind"] == "import"

    # the model writes a stored branch again, token for token (from the original and the copy)
    for name in ("croissant.loom", "copy.loom"):
        again = ok(loom("regenerate", name, "--node", str(kids[2])))
        assert again.stdout.startswith(f"node {kids[2]}: IDENTICAL")
        assert "branch 3 of a batch of 3; seed 7" in again.stdout

    # a web page of it: every text there, escaped, and the timeline of every event
    ok(loom("export", "croissant.loom", "--format", "html", "-o", "croissant.html"))
    page = (work / "croissant.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<i>Bob</i>" not in page and "alert(1)</script>" not in page
    data = embedded_data(page)
    assert {n["i"]: n["x"] for n in data["nodes"]} == {
        i: inert(r["text"]) for i, r in final.items()
    }
    assert data["timelineNote"] == ""
    assert [e[0] for e in data["events"]] == [e.seq for e in events]


def json_paths(node: dict[str, Any], before: str = "") -> list[str]:
    """Root-to-leaf texts of a socketteer tree, read straight from its JSON."""
    text = before + node["text"]
    kids = node.get("children", [])
    return [text] if not kids else [p for kid in kids for p in json_paths(kid, text)]


def json_path_to(node: dict[str, Any], target: str, before: str = "") -> str | None:
    text = before + node["text"]
    if node["id"] == target:
        return text
    for kid in node.get("children", []):
        found = json_path_to(kid, target, text)
        if found is not None:
            return found
    return None


def test_a_socketteer_save_file(env: dict[str, str], work: Path) -> None:
    def loom(*args: str | Path) -> Any:
        return run_loom(*args, cwd=work, env=env)

    src = DATA / "socketteer_teleology.json"
    raw = json.loads(src.read_text(encoding="utf-8"))
    expected = sorted(json_paths(raw["root"]))

    ok(loom("import", src, "-o", "teleology.loom"))
    path = work / "teleology.loom"
    with Loom.open(path, readonly=True) as lm:
        assert leaf_paths(lm) == expected
        by_origin = {lm.node(i).meta.get("socketteer_id"): i for i in all_ids(lm)}

    # what was being read when the file was saved
    shown_text = ok(loom("show", "teleology.loom")).stdout
    assert shown_text == json_path_to(raw["root"], raw["selected_node_id"])

    # continue the selected branch with the local model
    leaf = by_origin[raw["selected_node_id"]]
    new = ids_of(ok(loom("generate", "teleology.loom", "--node", str(leaf), "-n", "2",
                         "--max-tokens", "6", "--seed", "3")))  # fmt: skip
    with Loom.open(path, readonly=True) as lm:
        assert [h.id for h in lm.children(leaf)] == new
        leaf_text = lm.path_text(leaf)
        grown = leaf_paths(lm)
        records = tree_record(lm)
        generated = {i: records[i] for i in new}
    assert sorted([*(p for p in expected if p != leaf_text), *(leaf_text + generated[i]["text"]
                                                              for i in new)]) == grown  # fmt: skip
    for record in generated.values():
        assert record["author"] == "model" and record["tokens"]["ids"]

    # back to socketteer's format, and in again
    ok(loom("export", "teleology.loom", "--format", "socketteer", "-o", "teleology2.json"))
    out = json.loads((work / "teleology2.json").read_text(encoding="utf-8"))
    for key in ("chapters", "generation_settings", "selected_node_id"):
        assert out[key] == raw[key]
    ok(loom("import", "teleology2.json", "-o", "again.loom"))
    with Loom.open(work / "again.loom", readonly=True) as lm:
        assert leaf_paths(lm) == grown  # the same text on every root-to-leaf path
        again = tree_record(lm)
        for node_id, record in generated.items():  # the new branches keep what the model wrote
            twin = next(r for r in again.values() if r["text"] == record["text"])
            assert twin["author"] == "model"
            assert twin["tokens"] == record["tokens"]
            assert twin["generation"] == record["generation"], node_id
