"""The `loom` command: parses arguments, calls the domain layers, prints. Nothing else lives here.

Heavy imports (numpy, llama_cpp, textual) happen inside the subcommands so `loom --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from loom.text import inert, one_line, quoted

if TYPE_CHECKING:
    from loom.app.session import Session
    from loom.config import Config, SortOrder
    from loom.engine.backend import Backend
    from loom.engine.engine import Engine
    from loom.engine.remote import RemoteBackend
    from loom.store.loom import Loom

EXPORT_FORMATS = ("loom-json", "openloom", "socketteer", "markdown", "dot", "html", "svg")
IMPORT_FORMATS = ("loom-json", "openloom", "socketteer", "loomsidian")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _fail(message: str) -> NoReturn:
    raise CliError(message)


# --- shared helpers -----------------------------------------------------------------------------


def _existing_loom(path: Path) -> Path:
    if not path.exists():
        _fail(f"no such loom file: {path}")
    if path.is_dir():
        _fail(f"{path} is a directory, not a loom file")
    return path


def _open_loom(path: Path, *, readonly: bool) -> Loom:
    from loom.store.loom import Loom

    return Loom.open(_existing_loom(path), readonly=readonly)


def _node_id(loom: Loom, raw: str | None) -> int:
    if raw is None:
        return loom.current
    try:
        node_id = int(raw)
    except ValueError:
        _fail(f"node ids are whole numbers, not {raw!r}")
    loom.header(node_id)  # raises UnknownNodeError with a one-line message
    return node_id


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt_file is not None:
        _fail("give --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        try:
            return Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read prompt file {args.prompt_file}: {exc}")
    return str(args.prompt or "")


def _progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback that draws one updating bar on stderr (only on a terminal: nothing is
    written to a pipe or a file)."""
    tty = sys.stderr.isatty()
    shown = [-1]

    def report(done: int, total: int) -> None:
        if not tty or total <= 0:
            return
        pct = min(100, 100 * done // total)
        if pct == shown[0]:
            return
        shown[0] = pct
        filled = pct * 24 // 100
        bar = "#" * filled + "." * (24 - filled)
        end = "\n" if pct >= 100 else ""
        print(f"\r{label} [{bar}] {pct:3d}%", end=end, file=sys.stderr, flush=True)

    return report


def _resolve_model(model: str | None) -> Path:
    from loom.engine.models import ModelError, default_model_path, resolve_model

    if model is None:
        return default_model_path(progress=_progress_printer("assembling the default model"))
    path = Path(model)
    if not path.exists():
        try:  # a file name or stem that `loom models` lists (SmolLM2-135M-Instruct.Q4_1)
            return resolve_model(model)
        except ModelError:
            _fail(f"no such model file: {path}")
    return path


def _load_engine(model: str | None, *, sequences: int = 16) -> Engine:
    from loom.engine.engine import Engine

    return Engine.load(_resolve_model(model), n_seq_max=max(16, sequences))


def _remote(args: argparse.Namespace) -> RemoteBackend | None:
    """The server of `--remote URL`, checked before any loom is touched (None: no --remote)."""
    if getattr(args, "remote", None) is None:
        return None
    if getattr(args, "model", None) is not None:
        _fail("give --model or --remote, not both")
    from loom.app.remote import connect_remote

    return connect_remote(args.remote, _config(), model=args.remote_model)


def _backend(args: argparse.Namespace, *, sequences: int = 16, scores: bool = False) -> Backend:
    """`--remote URL` or the local model. `scores`: the command scores text (labels), which some
    servers cannot do: that is found out here, in one line, before anything is written."""
    remote = _remote(args)
    if remote is None:
        return _load_engine(args.model, sequences=sequences)
    if scores:
        remote.check_scoring()
    return remote


# --- subcommands --------------------------------------------------------------------------------


def cmd_new(args: argparse.Namespace) -> int:
    from loom.store.loom import Loom

    path: Path = args.path
    if path.exists():
        _fail(f"{path} already exists; open it with `loom open {path}`")
    prompt = _read_prompt(args)
    title = args.title or path.stem
    personas = None
    if args.personas is not None:
        from loom.personas.sets import load_persona_set

        persona_set = load_persona_set(Path(args.personas))
        personas = persona_set.personas
        if not prompt:
            prompt = persona_set.prompt or ""
        title = args.title or persona_set.title or title
    tokenizer = None if args.no_tokenize else _tokenizer_for(args.model)
    loom = Loom.create(path, title=title, prompt=prompt, tokenizer=tokenizer)
    with loom:
        if personas:
            loom.set_personas(personas)
        print(f"created {path} (root node {loom.root_id})")
    return 0


def _tokenizer_for(model: str | None) -> Any:
    from loom.engine.tokenizer import load_tokenizer

    return load_tokenizer(_resolve_model(model))


def cmd_import(args: argparse.Namespace) -> int:
    from loom.app.transfer import import_file

    src: Path = args.src
    if not src.exists():
        _fail(f"no such file: {src}")
    out: Path = args.output
    if out.exists():
        _fail(f"{out} already exists; choose another -o path")
    done = import_file(src, out, fmt=args.from_format, progress=_progress_printer("importing"))
    for warning in done.warnings:
        print(f"loom: warning: {one_line(' '.join(str(warning).split()))}", file=sys.stderr)
    print(f"imported {done.nodes} nodes from {src} into {out} (root {done.root})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from loom.app.transfer import export_loom

    if args.format_version is not None and args.format != "loom-json":
        _fail("--format-version is for loom-json only")
    # Markdown is prose of one path (to --node, or the current node) unless --tree asks for the
    # outline; every other format is the whole tree with its event log, or the subtree under
    # --node, or with --path the path to --node (or the current node).
    prose = args.format == "markdown" and not args.tree
    with _open_loom(args.path, readonly=True) as loom:
        node = None if args.node is None else _node_id(loom, args.node)
        path = bool(args.path_only) or prose
        target: Any
        if args.output is None or str(args.output) == "-":
            sys.stdout.flush()
            target = sys.stdout.buffer
        else:
            target = Path(args.output)
        export_loom(
            loom,
            args.format,
            target,
            node=node,
            path=path,
            version=args.format_version,
            progress=_progress_printer("exporting"),
            whole_tree=not prose,
        )
    if not isinstance(target, Path):
        target.flush()
    else:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open_loom(args.path, readonly=True) as loom:
        node_id = _node_id(loom, args.node)
        text = loom.path_text(node_id)
    # Prose keeps its lines and tabs; everything that could drive the terminal is shown instead.
    sys.stdout.write(text if args.raw else inert(text))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_loom(args.path, readonly=True) as loom:
        stats = loom.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in stats)
        for key, value in stats.items():
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    if args.limit < 1:
        _fail(f"--limit must be at least 1, not {args.limit}")
    with _open_loom(args.path, readonly=True) as loom:
        hits = loom.search(args.query, limit=args.limit)
    for hit in hits:
        snippet = " ".join(hit.snippet.split())
        print(f"{hit.node_id}\t{one_line(snippet)}")
    if not hits:
        print("no matches", file=sys.stderr)
        return 1
    return 0


def _session(loom: Loom) -> Session:
    from loom.app.session import Session

    return Session(loom)


def cmd_tree(args: argparse.Namespace) -> int:
    from loom.app.hoist import breadcrumb
    from loom.app.navigation import View
    from loom.app.reading import (
        FilterError,
        filter_children,
        line_json,
        line_text,
        parse_filter,
        tree_lines,
    )

    if args.depth is not None and args.depth < 0:
        _fail(f"--depth must be 0 or more, not {args.depth}")
    if args.blind and args.filter is not None:
        _fail("--blind shows every branch: a --filter would tell by what it hides")
    try:
        child_filter = None if args.filter is None else parse_filter(args.filter)
    except FilterError as exc:
        _fail(str(exc))
    order: SortOrder = "shuffled" if args.blind else args.sort
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    entropy = child_filter is not None and child_filter.needs_entropy
    view = View(order, args.pruned, seed=seed, entropy=entropy)
    with _open_loom(args.path, readonly=True) as loom:
        session = _session(loom)
        root = loom.root_id
        top = root if args.node is None else _node_id(loom, args.node)
        heads = session.path_headers(top)
        lines = tree_lines(
            session.summary(top),
            lambda node_id: filter_children(session.children(node_id, view), child_filter),
            args.depth,
        )
    if args.json:
        data = {"top": top, "breadcrumb": [h.id for h in heads], "sort": order,
                "filter": None if child_filter is None else child_filter.describe(),
                "nodes": [line_json(line, blind=args.blind) for line in lines]}  # fmt: skip
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    if top != root:
        print(one_line(f"hoisted: {breadcrumb(heads)}", 200))
    for line in lines:
        print(line_text(line, blind=args.blind))
    return 0


def cmd_hoist(args: argparse.Namespace) -> int:
    from loom.app.hoist import HoistError, breadcrumb

    changing = args.node is not None or args.up or args.clear
    if sum([args.node is not None, args.up, args.clear]) > 1:
        _fail("give one of --node, --up and --clear")
    with _open_loom(args.path, readonly=not changing) as loom:
        session = _session(loom)
        hoist = session.hoist()
        if args.node is not None:
            path = session.path_headers(_node_id(loom, args.node))
            try:
                # Hoisting a node outside the hoist first unhoists as far as it takes (as a jump
                # outside does in the app), so every level lies inside the one before.
                hoist.widen_to([h.id for h in path])
                hoist.push(path)
            except HoistError as exc:
                _fail(str(exc))
        elif args.up or args.clear:
            hoist.pop(all_levels=args.clear)
        if changing:
            session.save_hoist(hoist)
        top = hoist.top(loom.root_id)
        crumb = breadcrumb(session.path_headers(top))
    print(one_line(f"hoisted: {crumb}" if hoist.active else "nothing hoisted: the whole tree", 200))
    return 0


def cmd_unread(args: argparse.Namespace) -> int:
    from loom.app.navigation import View
    from loom.app.reading import TreeLine, line_json, tree_lines

    with _open_loom(args.path, readonly=True) as loom:
        session = _session(loom)
        top = loom.root_id if args.node is None else _node_id(loom, args.node)
        view = View(include_pruned=args.pruned)
        unread = [
            line.node
            for line in tree_lines(session.summary(top), lambda i: session.children(i, view))
            if not line.node.read
        ]
    if args.json:
        print(json.dumps([line_json(TreeLine(0, n)) for n in unread], indent=2))
        return 0
    for node in unread:
        print(f"{node.id}\t{one_line(node.preview.strip(), 70)}")
    print(f"{len(unread)} unread" if unread else "nothing unread", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from loom.app.models import models_table
    from loom.engine.models import discover_models
    from loom.paths import model_dirs
    from loom.store.loom import ModelUse

    used: list[ModelUse] = []
    if args.loom is not None:
        with _open_loom(args.loom, readonly=True) as loom:
            used = loom.models_used()
    models = discover_models([*model_dirs(), *(Path(d) for d in args.dir)])
    rows = models_table(models, used)
    if args.json:
        out = []
        for row in rows:
            item: dict[str, Any] = row.info.to_json() if row.info else {"name": row.name}
            if args.loom is not None:
                item["loom_nodes"] = row.used.nodes if row.used else 0
                item["found"] = row.info is not None
            out.append(item)
        print(json.dumps(out, indent=2))
        return 0
    if not rows:
        print("no models found", file=sys.stderr)
        return 1
    for row in rows:
        # With --loom, one more column: how many of its nodes each model wrote.
        wrote = "" if args.loom is None else f"\twrote {row.used.nodes if row.used else 0}"
        m = row.info
        if m is None:
            print(f"{one_line(row.name)}\t—\t—\t—\t—\tnot found here{wrote}")
            continue
        size = f"{m.size_bytes / 1e6:.0f} MB"
        print(
            f"{one_line(m.name)}\t{size}\t{m.architecture}\tctx {m.n_ctx_train}\t"
            f"{m.looks_like}\t{m.path}{wrote}"
        )
    return 0


def _config() -> Config:
    from loom.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        _fail(f"config: {exc}")


def _generation_flags(args: argparse.Namespace) -> None:
    """Fill the generation flags left out from the config, as the app's `g` would use them."""
    config = _config()
    preset = config.active_preset()
    defaults = {
        "n": preset.n or config.n,
        "max_tokens": preset.max_tokens or config.max_tokens,
        "temperature": preset.temperature,
        "top_p": preset.top_p,
        "top_k": preset.top_k,
        "min_p": preset.min_p,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model is None and config.model and getattr(args, "remote", None) is None:
        args.model = str(Path(config.model).expanduser())


def _sampler_settings(args: argparse.Namespace) -> Any:
    """The sampler flags as engine settings, checked before any model is loaded."""
    from loom.engine.sampling import SamplerSettings, SamplerSettingsError

    try:
        return SamplerSettings(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
    except SamplerSettingsError as exc:
        _fail(f"--{exc}")  # the messages start with the setting's name, which is the flag's


def cmd_generate(args: argparse.Namespace) -> int:
    from loom.app.session import Session

    _generation_flags(args)
    if not 1 <= args.n <= 64:
        _fail(f"-n must be between 1 and 64, not {args.n}")
    if not 1 <= args.max_tokens <= 4096:
        _fail(f"--max-tokens must be between 1 and 4096, not {args.max_tokens}")
    settings = _sampler_settings(args)
    with _open_loom(args.path, readonly=True) as loom:
        _node_id(loom, args.node)  # a bad node is said before a model loads or a server is asked
    backend = _backend(args)
    with _open_loom(args.path, readonly=False) as loom:
        node_id = _node_id(loom, args.node)
        session = Session(loom, backend)
        ids = session.generate(node_id, args.n, settings, keep_recent=args.keep_recent)
    for node in ids:
        print(node)
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from loom.app.context import check_memory, describe, memories_at
    from loom.store.model import Memory

    given = [x for x in (args.text, args.file) if x is not None]
    if len(given) + bool(args.clear) + bool(args.list) > 1:
        _fail("give one of --text, --file, --clear or --list")
    if args.list:
        if args.node is not None:
            _fail("--list shows every memory of the loom: give it without --node")
        with _open_loom(args.path, readonly=True) as loom:
            every = loom.memories()
        for memory in every:
            where = "loom" if memory.node is None else str(memory.node)
            print(f"{where}\t{memory.placement}\t{one_line(memory.text)}")
        if not every:
            print("no memories", file=sys.stderr)
        return 0
    if args.depth is not None and (args.depth < 0 or not given):
        _fail("--depth is a number of tokens >= 0, given with --text or --file")
    text = args.text
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read memory file {args.file}: {exc}")
    if text is not None and not text:
        _fail("the memory text is empty (use --clear to remove a memory)")
    readonly = text is None and not args.clear
    with _open_loom(args.path, readonly=readonly) as loom:
        node_id = None if args.node is None else _node_id(loom, args.node)
        where = "the loom" if node_id is None else f"node {node_id}"
        if readonly:  # show what is kept there and what is in effect
            kept = loom.memory(node_id)
            print(f"{where}: " + ("no memory" if kept is None else kept.placement))
            if kept is not None:
                print(inert(kept.text))
            if node_id is not None:
                print(
                    f"in effect after node {node_id}: "
                    + (describe(memories_at(loom, node_id), node_id) or "none")
                )
            return 0
        if args.clear:
            loom.set_memory(node_id, None)
            print(f"cleared the memory of {where}")
            return 0
        assert text is not None
        memory = Memory(text, depth=args.depth)
        config = _config()
        tokenizer = _tokenizer_for(args.model or (config.model or None))
        try:
            n = check_memory(memory, lambda t: tokenizer.ids(t), config.n_ctx, config.max_tokens)
        finally:
            tokenizer.close()
        loom.set_memory(node_id, memory)
    print(f"memory of {where} set: {n} tokens, {memory.placement}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from loom.personas.actions import label_nodes, persona_set_from_loom
    from loom.personas.sets import load_persona_set

    if not 0 < args.threshold <= 1:
        _fail("--threshold must be in (0, 1]")
    _existing_loom(args.path)
    engine = _backend(args, scores=True)
    with _open_loom(args.path, readonly=False) as loom:
        persona_set = (
            load_persona_set(Path(args.personas))
            if args.personas is not None
            else persona_set_from_loom(loom)
        )
        if persona_set is None:
            _fail("this loom has no persona set yet: give one with --personas FILE.toml")
        node_ids = None if args.node is None else [_node_id(loom, args.node)]
        run = label_nodes(
            loom,
            engine,
            persona_set,
            node_ids=node_ids,
            threshold=args.threshold,
            collapse_threshold=args.collapse_threshold,
            calibration="none" if args.no_calibration else "prior",
        )
    for node_id, label in sorted(run.labels.items()):
        ranked = sorted(label.posterior.items(), key=lambda kv: -kv[1])
        posterior = " ".join(f"{name}={p:.3f}" for name, p in ranked)
        marks = "".join(
            f" [{name}]" for name in ("collapse", "mode_collapse") if getattr(label, name)
        )
        print(f"{node_id}\t{label.label or 'undecided'}\t{posterior}{marks}")
    print(run.summary(), file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from loom.app.scoring import node_ids_in_scope
    from loom.app.session import Session
    from loom.tokens import mean_logprob

    if args.subtree and args.node is None:
        _fail("--subtree needs --node ID")
    with _open_loom(args.path, readonly=True) as loom:
        if args.node is not None:
            _node_id(loom, args.node)  # a bad node is said before a model loads
    backend = _backend(args, scores=True)
    top_logprobs = _config().top_logprobs
    with _open_loom(args.path, readonly=False) as loom:
        node = None if args.node is None else _node_id(loom, args.node)
        session = Session(loom, backend)
        plan = session.plan_scoring(
            node_ids_in_scope(loom, node, subtree=args.subtree),
            top_logprobs=top_logprobs,
            again=args.again,
        )
        run = session.run_scoring(plan, progress=_progress_printer("scoring"))
        session.save_scores(run)
    rate = run.n_tokens / run.seconds if run.seconds > 0 else 0.0
    data = {
        "model": run.model,
        "model_sha256": run.model_sha256,
        "nodes": [
            {"node": n, "tokens": len(t), "mean_logprob": mean_logprob(t.logprobs)}
            for n, t in run.readings
        ],
        "n_nodes": len(run.readings),
        "n_tokens": run.n_tokens,
        "seconds": round(run.seconds, 3),
        "skipped": [*run.too_long, *run.unaligned],
    }
    lines = [
        f"{n}  {len(t)} tokens  mean logprob {_mean_text(mean_logprob(t.logprobs))}"
        for n, t in run.readings
    ]
    _print_result(args.json, data, lines)
    print(
        f"read {len(run.readings)} node(s), {run.n_tokens} tokens, with "
        f"{quoted(run.model, 60)} in {run.seconds:.2f} s ({rate:.0f} tok/s)",
        file=sys.stderr,
    )
    if run.too_long:
        print(
            f"loom: warning: node(s) {', '.join(map(str, run.too_long))} are longer than the "
            "model's context and were not read",
            file=sys.stderr,
        )
    return 0


def _mean_text(mean: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f}"


def cmd_census(args: argparse.Namespace) -> int:
    from loom.app.census import CensusSettings, census_lines
    from loom.app.session import Session

    settings = CensusSettings(
        rollouts=args.rollouts, tokens=args.tokens, seed=args.seed, batch=args.batch
    )
    settings.check()  # before the model loads
    _existing_loom(args.path)
    engine = _backend(args, sequences=args.batch, scores=True)
    with _open_loom(args.path, readonly=False) as loom:
        session = Session(loom, engine)
        node_id = _node_id(loom, args.node)
        result = session.run_census(
            node_id,
            settings,
            token_index=args.token_index,
            progress=_progress_printer("census"),
        )
        seq = session.save_census(result)
    _print_result(args.json, result.to_json(), census_lines(result))
    print(f"stored as event {seq} (loom replay lists it)", file=sys.stderr)
    return 0


def _print_result(as_json: bool, data: object, lines: list[str]) -> None:
    """A result as one JSON object (--json), or as its lines of text made inert."""
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for line in lines:
            print(one_line(line))


def cmd_grow(args: argparse.Namespace) -> int:
    from loom.app.growth import Growth, GrowthPolicy, GrowthStep, grow
    from loom.app.session import Session

    _generation_flags(args)
    settings = _sampler_settings(args)
    _existing_loom(args.path)
    engine = _backend(args, scores=True)
    with _open_loom(args.path, readonly=False) as loom:
        session = Session(loom, engine)
        root = _node_id(loom, args.node)
        persona_set = session.persona_set
        policy = GrowthPolicy.parse(args.policy, persona_set.names if persona_set else [])
        growth = Growth(
            session,
            policy,
            root,
            args.n,
            settings,
            budget_tokens=args.budget,
            budget_seconds=args.seconds,
        )

        def report(step: GrowthStep, ids: list[int]) -> None:
            made = ", ".join(f"#{i}" for i in ids)
            print(one_line(f"step {growth.steps}: {step.plan.reason} -> {made}"), flush=True)

        grow(growth, on_step=report)
    print(
        f"grew {growth.steps} step(s), {growth.tokens} tokens ({policy.name}); "
        "each step is one undo step",
        file=sys.stderr,
    )
    return 0


def cmd_transitions(args: argparse.Namespace) -> int:
    from loom.app.census import CensusSettings, transition_lines, transition_table
    from loom.app.session import Session

    settings = CensusSettings(rollouts=args.rollouts, tokens=args.tokens, seed=args.seed)
    settings.check()
    _existing_loom(args.path)
    engine = _backend(args, scores=True)
    with _open_loom(args.path, readonly=False) as loom:
        session = Session(loom, engine)
        root = _node_id(loom, args.node) if args.node is not None else loom.root_id
        pairs, fresh = session.plan_transitions(
            root, settings, progress=_progress_printer("censuses")
        )
        session.save_censuses(fresh)
    if not pairs:
        _fail("no labelled node in this subtree: label some first (`loom label`)")
    table = transition_table(pairs)
    _print_result(args.json, table.to_json(), transition_lines(table))
    print(f"{len(fresh)} new census(es) stored", file=sys.stderr)
    return 0


def cmd_forks(args: argparse.Namespace) -> int:
    from loom.app.forks import FORKING_TV
    from loom.app.session import Session

    if args.budget <= 0:
        _fail(f"--budget must be above 0, not {args.budget}")
    _existing_loom(args.path)
    engine = _backend(args, scores=True)
    with _open_loom(args.path, readonly=True) as loom:
        session = Session(loom, engine)
        node_id = _node_id(loom, args.node)
        result = session.fork_map(
            node_id,
            args.budget,
            whole_path=not args.node_only,
            seed=args.seed,
            rollouts=args.rollouts,
            rollout_tokens=args.tokens,
            progress=_progress_printer("fork map"),
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    forking = {p.index for p in result.forking()}
    print(
        f"fork map of node {node_id}: {len(result.points)} tokens weighed, "
        f"{result.tokens_used} of {result.budget} budget tokens, seed {result.seed}"
    )
    for point in result.points:
        mark = "FORK" if point.index in forking else "    "
        outcomes = "  ".join(
            f"{quoted(o.text, 12)} {o.p:.2f}→{_top_outcome(o.distribution(result.names))}"
            for o in point.outcomes
        )
        print(
            one_line(
                f"{mark} token {point.index:>4} (#{point.node_id})  "
                f"TV {point.divergence(result.names):.2f}  {outcomes}"
            )
        )
    print(f"{len(forking)} forking token(s) (TV ≥ {FORKING_TV})", file=sys.stderr)
    return 0


def _top_outcome(distribution: dict[str, float]) -> str:
    name = max(distribution, key=lambda k: distribution[k])
    return f"{name} {distribution[name]:.0%}"


def cmd_replay(args: argparse.Namespace) -> int:
    if args.headless:
        from loom.app.timeline import timeline_lines

        with _open_loom(args.path, readonly=True) as loom:
            lines = timeline_lines(loom.events())
        for line in lines:
            print(one_line(line))
        return 0
    from loom.tui.launch import run_app

    return run_app(
        _existing_loom(args.path), prompt=None, model_path=None, readonly=True, replay=True
    )


def cmd_fork(args: argparse.Namespace) -> int:
    from loom.app.timeline import fork_at

    out: Path = args.output
    if out.exists():
        _fail(f"{out} already exists; choose another -o path")
    with _open_loom(args.path, readonly=True) as loom:
        fork_at(loom, args.at, out)
    print(f"wrote {out}: the loom as it was after event {args.at}")
    return 0


def cmd_regenerate(args: argparse.Namespace) -> int:
    from loom.app.regenerate import regenerate
    from loom.engine.engine import Engine
    from loom.paths import model_dirs

    remote = _remote(args)
    with _open_loom(args.path, readonly=True) as loom:
        node_id = _node_id(loom, args.node)
        report = regenerate(
            loom,
            node_id,
            models_dirs=[*model_dirs(), *(Path(d) for d in args.dir)],
            engine_loader=Engine.load,
            model_path=None if args.model is None else Path(args.model),
            backend=remote,
        )
    for line in report.lines():
        print(one_line(line))
    return 0 if report.identical else 3


def cmd_doctor(args: argparse.Namespace) -> int:
    from loom.app.doctor import diagnose

    findings = diagnose(args.model)
    for finding in findings:
        print(one_line(finding.line()))
    problems = [f for f in findings if not f.ok]
    if problems:
        first = problems[0]
        _fail(f"doctor found {len(problems)} problem(s); first, {first.topic}: {first.detail}")
    print("everything checked works")
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    from loom.tui.launch import run_app

    return run_app(
        _existing_loom(args.path),
        prompt=None,
        model_path=None if args.model is None else Path(args.model),
        readonly=args.readonly,
        remote=_remote(args),
    )


def cmd_default(args: argparse.Namespace) -> int:
    """`loom` alone: open the last loom, or a new one from --prompt."""
    from loom.tui.launch import run_app

    return run_app(
        None,
        prompt=args.prompt,
        model_path=None if args.model is None else Path(args.model),
        readonly=False,
        remote=_remote(args),
    )


# --- parser -------------------------------------------------------------------------------------


def _model_flags(p: argparse.ArgumentParser, model_help: str) -> None:
    """--model PATH, or --remote URL (with --remote-model NAME): the model a command uses."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", help=model_help)
    group.add_argument(
        "--remote",
        metavar="URL",
        help="use a completion server instead: llama-server, vLLM, llama-cpp-python "
        "(key: $LOOM_API_KEY or [remote] in the config)",
    )
    p.add_argument(
        "--remote-model",
        metavar="NAME",
        help="the model to ask the server for (default: [remote] model, else its first)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Explore what a local base language model could say, as a tree of branches.",
    )
    parser.add_argument("--prompt", help="start a new loom from this prompt (with no subcommand)")
    _model_flags(parser, "GGUF model file (default: the bundled Gemma 3 270M)")
    parser.set_defaults(func=cmd_default)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("new", help="create a loom file from a prompt")
    p.add_argument("path", type=Path, help="the .loom file to create")
    p.add_argument("--prompt", help="the prompt text")
    p.add_argument("--prompt-file", help="read the prompt from this file")
    p.add_argument("--title", help="title of the loom (default: the file name)")
    p.add_argument("--personas", help="persona set TOML; its prompt is used if none is given")
    p.add_argument("--model", help="tokenize with this GGUF model (default: Gemma 3 270M)")
    p.add_argument("--no-tokenize", action="store_true", help="store the prompt without token ids")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("open", help="open a loom in the terminal app")
    p.add_argument("path", type=Path)
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.add_argument("--readonly", action="store_true", help="browse without changing the file")
    p.set_defaults(func=cmd_open)

    p = sub.add_parser("import", help="import a loom from another format")
    p.add_argument("src", type=Path, help="file to import")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .loom file to create")
    p.add_argument("--from", dest="from_format", choices=IMPORT_FORMATS, help="source format")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export a loom to another format")
    p.add_argument("path", type=Path)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.add_argument(
        "--node",
        help="export only the subtree under this node (markdown prose: the path to it)",
    )
    p.add_argument(
        "--path",
        dest="path_only",
        action="store_true",
        help="export only the path from the root to --node (default: the last visited node)",
    )
    p.add_argument("--tree", action="store_true", help="markdown: the tree as an outline")
    p.add_argument(
        "--format-version",
        type=int,
        choices=(1, 2),
        help="loom-json version to write (default 2: columns and one vocabulary; 1: one object "
        "per token, for older readers)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("show", help="print the text of the path to a node")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="node id (default: the last visited)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write the text exactly, control characters included (for pipes, not terminals)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("stats", help="counts and depths of a loom")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("search", help="full-text search over node text")
    p.add_argument("path", type=Path)
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_search)

    from loom.config import SORT_ORDERS

    p = sub.add_parser("tree", help="print the tree (or a node's subtree) with probabilities")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="print this node's subtree as if it were the root (a hoist)")
    p.add_argument("--sort", choices=SORT_ORDERS, default="created", help="sibling order")
    p.add_argument("--filter", help="keep children by a number: 'mean >= 20%%', 'entropy <= 2'")
    p.add_argument("--depth", type=int, help="levels below the top to print (default: all)")
    p.add_argument("--pruned", action="store_true", help="print pruned branches too")
    p.add_argument(
        "--blind", action="store_true",
        help="no probabilities, entropy or personas; siblings shuffled (--seed fixes it)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="the shuffle of --blind")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_tree)

    p = sub.add_parser("hoist", help="show or set the node the app opens hoisted on")
    p.add_argument("path", type=Path)
    p.add_argument(
        "--node", help="hoist this node (inside the hoist: one level more; outside: instead)"
    )
    p.add_argument("--up", action="store_true", help="unhoist one level")
    p.add_argument("--clear", action="store_true", help="unhoist every level")
    p.set_defaults(func=cmd_hoist)

    p = sub.add_parser("unread", help="list the nodes never shown in the app's reading pane")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="only under this node")
    p.add_argument("--pruned", action="store_true", help="list pruned ones too")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_unread)

    p = sub.add_parser("models", help="list available GGUF models")
    p.add_argument("--dir", action="append", default=[], help="also look in this folder")
    p.add_argument(
        "--loom", type=Path, help="also say which models wrote this loom's nodes, and how many"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("generate", help="add N model-written children to a node")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="parent node id (default: the last visited)")
    # Unset flags come from the config, as `g` in the app: [generation] and its preset.
    p.add_argument("-n", type=int, help="number of branches, 1-64 (default: the config's)")
    p.add_argument("--max-tokens", type=int, help="tokens per branch (default: the config's)")
    p.add_argument("--temperature", type=float, help="(default: the config's preset)")
    p.add_argument("--top-p", type=float, help="(default: the config's preset)")
    p.add_argument("--top-k", type=int, help="0 is off (default: the config's preset)")
    p.add_argument("--min-p", type=float, help="(default: the config's preset)")
    p.add_argument("--seed", type=int, help="seed (default: random, recorded in the loom)")
    p.add_argument(
        "--keep-recent",
        action="store_true",
        help="if the path is longer than the context, keep only its most recent tokens",
    )
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("memory", help="hidden context the model reads but the tree does not show")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="the node whose memory (default: the loom's, for every path)")
    p.add_argument("--text", help="the memory's text, read exactly as written")
    p.add_argument("--file", help="read the memory's text from this file (UTF-8)")
    p.add_argument("--clear", action="store_true", help="remove the memory")
    p.add_argument(
        "--list", action="store_true", help="list every memory: the loom's and each node's"
    )
    p.add_argument(
        "--depth",
        type=int,
        help="an author's note this many tokens before the end of the path (default: before it)",
    )
    p.add_argument(
        "--model", help="GGUF whose vocabulary counts the tokens (default: the config's)"
    )
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("label", help="label nodes with the persona they voice")
    p.add_argument("path", type=Path)
    p.add_argument("--personas", help="persona set TOML (default: the set stored in the loom)")
    p.add_argument("--node", help="label this node (default: every unlabelled node)")
    p.add_argument(
        "--threshold", type=float, default=0.6, help="posterior needed to set a label (0.6)"
    )
    p.add_argument(
        "--collapse-threshold",
        type=float,
        default=0.5,
        help="posterior shift that marks a collapse (0.5)",
    )
    p.add_argument(
        "--no-calibration", action="store_true", help="use raw likelihoods (for comparison)"
    )
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser(
        "score", help="have the model read human-written and imported text (token probabilities)"
    )
    p.add_argument("path", type=Path)
    p.add_argument(
        "--node", help="only the path from the root to this node (default: the whole loom)"
    )
    p.add_argument("--subtree", action="store_true", help="with --node: the node's subtree too")
    p.add_argument(
        "--again", action="store_true", help="read nodes this model has read already too"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("replay", help="watch a loom grow again, event by event (no model needed)")
    p.add_argument("path", type=Path)
    p.add_argument("--headless", action="store_true", help="print the events as a timeline")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("fork", help="write the loom as it was after an event to a new file")
    p.add_argument("path", type=Path)
    p.add_argument(
        "--at", type=int, required=True, help="event number (see `loom replay --headless`)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the new .loom file")
    p.set_defaults(func=cmd_fork)

    p = sub.add_parser(
        "regenerate", help="re-run a model-written node and check the model writes it again"
    )
    p.add_argument("path", type=Path)
    p.add_argument("--node", required=True, help="the model-written node")
    _model_flags(p, "try this GGUF file first")
    p.add_argument("--dir", action="append", default=[], help="also look for models here")
    p.set_defaults(func=cmd_regenerate)

    p = sub.add_parser("census", help="how often each persona speaks next from a node")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="node id (default: the last visited)")
    p.add_argument(
        "--token-index", type=int, help="a census after each alternative at this token of the node"
    )
    p.add_argument("-r", "--rollouts", type=int, default=32, help="rollouts (32)")
    p.add_argument("-l", "--tokens", type=int, default=48, help="tokens per rollout (48)")
    p.add_argument("--batch", type=int, default=16, help="rollouts decoded together (16)")
    p.add_argument("--seed", type=int, help="seed (default: random, recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_census)

    p = sub.add_parser("grow", help="let the loom grow itself by a policy, under a budget")
    p.add_argument("path", type=Path)
    p.add_argument("--policy", required=True, help="explore, hunt:NAME or fork")
    p.add_argument("--budget", type=int, help="tokens to generate")
    p.add_argument("--seconds", type=float, help="or: seconds to run")
    p.add_argument("--node", help="grow this node's subtree (default: the last visited)")
    p.add_argument("-n", type=int, help="children per step (default: the config's)")
    p.add_argument("--max-tokens", type=int, help="tokens per child (default: the config's)")
    p.add_argument("--temperature", type=float, help="(default: the config's preset)")
    p.add_argument("--top-p", type=float, help="(default: the config's preset)")
    p.add_argument("--top-k", type=int, help="(default: the config's preset)")
    p.add_argument("--min-p", type=float, help="(default: the config's preset)")
    p.add_argument("--seed", type=int, help="seed (default: random, recorded per node)")
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_grow)

    p = sub.add_parser(
        "transitions", help="for labelled nodes, the persona their futures are labelled with"
    )
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="the subtree (default: the whole loom)")
    p.add_argument("-r", "--rollouts", type=int, default=8, help="rollouts per node (8)")
    p.add_argument("-l", "--tokens", type=int, default=48, help="tokens per rollout (48)")
    p.add_argument("--seed", type=int, help="seed (default: random, recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_transitions)

    p = sub.add_parser("forks", help="the tokens of a path where the persona outcome forks")
    p.add_argument("path", type=Path)
    p.add_argument("--node", help="the path's last node (default: the last visited)")
    p.add_argument("--budget", type=int, default=20_000, help="rollout tokens to spend (20000)")
    p.add_argument("--node-only", action="store_true", help="only the node's own tokens")
    p.add_argument("-r", "--rollouts", type=int, default=4, help="rollouts per outcome per round")
    p.add_argument("-l", "--tokens", type=int, default=24, help="tokens per rollout (24)")
    p.add_argument("--seed", type=int, help="seed (default: random, recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _model_flags(p, "GGUF model file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_forks)

    p = sub.add_parser(
        "doctor", help="check llama.cpp, the CPU, the model and loom's folders on this machine"
    )
    p.add_argument("--model", help="check this GGUF file (default: Gemma 3 270M)")
    p.set_defaults(func=cmd_doctor)

    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """Domain exceptions whose messages are written for users."""
    errors: list[type[BaseException]] = [CliError]
    for module, name in (
        ("loom.store.errors", "LoomError"),
        ("loom.formats.errors", "FormatError"),
        ("loom.engine.errors", "EngineError"),
        ("loom.personas.sets", "PersonaSetError"),
        ("loom.app.census", "CensusError"),
        ("loom.app.forks", "ForkMapError"),
        ("loom.app.growth", "GrowthError"),
        ("loom.app.generation", "GenerationUnavailable"),
        ("loom.app.scoring", "ScoringUnavailable"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
            errors.append(getattr(mod, name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not as noise at exit
        return status
    except KeyboardInterrupt:
        print("loom: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`loom replay --headless x.loom | head -1`): stop quietly with the
        # status of a process killed by SIGPIPE, as `cat` would.
        _quiet_stdout()
        return 141
    except _known_errors() as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"loom: error: {message}", file=sys.stderr)
        return 1
    except OSError as exc:  # the system refused a read or write (stdout on a full disk...)
        _quiet_stdout()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"loom: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """After standard output failed, let the flush at exit go nowhere instead of printing noise."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
