"""`loom score` as a user runs it: a socketteer loom (text without probabilities) read by the real
default model, the whole loom or the path to a node, kept in the file and its exports; bad input
is one line and leaves the file as it was."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.cli import DATA, env, failed, ok, run_loom, snapshot, work

from loom.store.loom import Loom

__all__ = ["env", "work"]

pytestmark = pytest.mark.model
TELEOLOGY = DATA / "socketteer_teleology.json"


@pytest.fixture
def imported(work: Path, env: dict[str, str]) -> Path:
    ok(run_loom("import", TELEOLOGY, "-o", "t.loom", cwd=work, env=env))
    return work / "t.loom"


def test_score_reads_every_unscored_node_once(imported: Path, env: dict[str, str]) -> None:
    with Loom.open(imported, readonly=True) as loom:
        n_nodes = loom.stats()["nodes"]
        assert all(loom.node(i).scores == [] for i in range(1, n_nodes + 1))
    result = ok(run_loom("score", imported, cwd=imported.parent, env=env))
    lines = result.stdout.splitlines()
    assert len(lines) == n_nodes  # a socketteer file carries no probabilities: every node
    assert all(re.fullmatch(r"\d+  \d+ tokens  mean logprob -\d+\.\d{3}", line) for line in lines)
    (summary,) = result.stderr.splitlines()
    assert summary.startswith(f"read {n_nodes} node(s), ") and "tok/s" in summary
    with Loom.open(imported, readonly=True) as loom:
        for node_id in range(1, n_nodes + 1):
            node = loom.node(node_id)
            (score,) = node.scores
            assert score.tokens.text == node.text and score.model_sha256
            assert not np.isnan(score.tokens.logprobs).any() and score.tokens.k == 5
        assert loom.events()[-1].kind == "score"
    # read already: nothing more to read, the file keeps one reading per node and model
    again = ok(run_loom("score", imported, "--json", cwd=imported.parent, env=env))
    data = json.loads(again.stdout)
    assert data["n_nodes"] == 0 and data["nodes"] == [] and data["model"]


def test_score_a_path_and_export_it(imported: Path, env: dict[str, str]) -> None:
    with Loom.open(imported, readonly=True) as loom:
        leaf = max(loom.leaves(), key=lambda i: loom.header(i).depth)
        path = [h.id for h in loom.ancestors(leaf)] + [leaf]
    result = ok(run_loom("score", imported, "--node", str(leaf), "--json",
                         cwd=imported.parent, env=env))  # fmt: skip
    data = json.loads(result.stdout)
    assert [n["node"] for n in data["nodes"]] == path
    assert data["n_tokens"] == sum(n["tokens"] for n in data["nodes"]) > 0
    assert all(n["mean_logprob"] < 0 for n in data["nodes"])
    for version in ("1", "2"):
        out = imported.parent / f"t{version}.json"
        ok(run_loom("export", imported, "--format", "loom-json", "--format-version", version,
                    "-o", out, cwd=imported.parent, env=env))  # fmt: skip
        nodes = json.loads(out.read_text())["nodes"]
        scored = {n["id"]: n["scored"] for n in nodes if "scored" in n}
        assert sorted(scored) == path
        assert all(s[0]["model"] == data["model"] for s in scored.values())
        # the node's own tokens stay without probabilities: read, not sampled
        assert all(n.get("generation") is None for n in nodes if n["id"] in scored)
        back = imported.parent / f"back{version}.loom"
        ok(run_loom("import", out, "-o", back, cwd=imported.parent, env=env))
        with Loom.open(back, readonly=True) as loom:
            assert [len(loom.node(i).scores) for i in path] == [1] * len(path)


def test_bad_input_is_one_line_and_changes_nothing(imported: Path, env: dict[str, str]) -> None:
    work = imported.parent
    before = snapshot(work)
    failed(run_loom("score", imported, "--model", "nowhere.gguf", cwd=work, env=env),
           "no such model file")  # fmt: skip
    failed(run_loom("score", imported, "--node", "999", cwd=work, env=env), "999")
    failed(run_loom("score", imported, "--node", "x", cwd=work, env=env), "whole numbers")
    failed(run_loom("score", imported, "--subtree", cwd=work, env=env), "--subtree needs --node")
    failed(run_loom("score", work / "missing.loom", cwd=work, env=env), "no such loom file")
    assert snapshot(work) == before
