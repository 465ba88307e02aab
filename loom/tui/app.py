"""The loom app: the panes, every action, the command palette and F1 help; and `run_app`.

python -m loom.tui.app [PATH.loom] [--prompt TEXT] [--model PATH.gguf] [--readonly]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual.app import SystemCommand
from textual.screen import Screen

from loom.config import Config, ConfigError, load_config
from loom.paths import config_dir
from loom.session import Backend, Session
from loom.store.tokenizer import Tokenizer
from loom.tui.editing import EditActions
from loom.tui.generation import GenerationActions
from loom.tui.keymap import APP_ACTIONS, TOKEN_ACTIONS
from loom.tui.personas import PersonaActions
from loom.tui.screens.help import HelpScreen, help_text, live_keys


class LoomApp(PersonaActions, GenerationActions, EditActions):
    """`backend`: an engine already loaded (tests share one); otherwise, with `load_model`, the
    model (`model_path`, else the config's, else the default model) loads in a worker."""

    def __init__(
        self,
        session: Session,
        config: Config,
        *,
        model_path: Path | None = None,
        load_model: bool = True,
        notices: Iterable[str] = (),
    ) -> None:
        super().__init__(session, config)
        self._model_path = model_path
        self._load_model_on_mount = load_model and session.backend is None
        self._notices = list(notices)
        self.set_keymap(config.keymap)

    def after_mount(self) -> None:
        for notice in self._notices:
            self.notify(notice, timeout=8)
        if self.session.backend is not None:
            self.status.show(model=self.session.model_name,
                             context_total=self.session.backend.n_ctx)  # fmt: skip
        elif self._load_model_on_mount and not self.session.loom.readonly:
            self.load_model(self._model_path)
        else:
            reason = self.session.generation_blocker() or "no model"
            self.status.show(model_note=f"none — {reason}")

    # ----------------------------------------------------------------- help and palette

    def action_help(self) -> None:
        namespaces = [self, self.screen, self.reading]
        keys = live_keys(self, namespaces)
        self.push_screen(HelpScreen(help_text((*APP_ACTIONS, *TOKEN_ACTIONS), keys)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every loom action, named as in F1 help, with the key bound to it now."""
        keys = live_keys(self, [self])
        for action in APP_ACTIONS:
            if action.id == "loom.palette":
                continue
            bound = ", ".join(keys.get(action.id, []))
            yield SystemCommand(
                action.title,
                # Palette help is rendered as markup: no square brackets in it.
                action.help + (f" · key {bound}" if bound else ""),
                partial(self.run_action, action.action),
            )
        yield from self._persona_commands()
        yield SystemCommand(
            "Branch with an alternative token",
            "Token cursor: pick one of the alternatives at the cursor and branch",
            self._palette_branch,
        )

    def _persona_commands(self) -> Iterable[SystemCommand]:
        """The persona filter, one entry per persona of the loom."""
        for name in self.persona_names():
            yield SystemCommand(
                f"Show only persona {name}",
                f"Tree: only branches voicing {name} (unlabelled ones stay)",
                partial(self.action_persona_filter_only, name),
            )
            yield SystemCommand(
                f"Hide persona {name}",
                f"Tree: hide branches voicing {name}",
                partial(self.action_persona_filter_hide, name),
            )
        if self.persona_filter is not None or self.persona_names():
            yield SystemCommand(
                "Clear persona filter",
                "Tree: show every branch again",
                self.action_persona_filter_clear,
            )

    def _palette_branch(self) -> None:
        self.reading.focus()
        self.reading.action_branch()

    # ----------------------------------------------------------------- quitting

    async def action_quit(self) -> None:
        if self.generation is not None:
            # Keep what has been generated: the handler saves the partial branches, then exits.
            self.quit_after_generation = True
            self.generation.cancel.set()
            self.status.show(saved="saving partial branches before quitting…")
            return
        self.remember_current()
        self.exit(0)


# --------------------------------------------------------------------------- entry point


def tune_gc() -> None:
    """Keep garbage collection pauses out of keypresses.

    Full collections walk every object alive; after start-up most of them (Textual, rich,
    numpy, the first view) live forever. Freezing them and collecting the young generation
    less often takes the ~50 ms pauses out of navigation on big looms (bench/tui_latency.py).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def new_loom_path(folder: Path | None = None) -> Path:
    """Where `loom` with no file starts a new loom: sessions/ if the current folder has one."""
    folder = folder or (Path("sessions") if Path("sessions").is_dir() else Path("."))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"loom-{stamp}.loom"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"loom-{stamp}-{n}.loom"
    return path


def last_loom_file() -> Path:
    """Where the path of the loom opened last is kept (for `loom` with no arguments)."""
    return config_dir() / "last-loom.txt"


def last_loom() -> Path | None:
    try:
        path = Path(last_loom_file().read_text(encoding="utf-8").strip())
    except OSError:
        return None
    return path if path.is_file() else None


def remember_loom(path: Path) -> None:
    with contextlib.suppress(OSError):  # a convenience: never worth failing over
        last_loom_file().parent.mkdir(parents=True, exist_ok=True)
        last_loom_file().write_text(str(path.resolve()), encoding="utf-8")


def open_session(
    loom_path: Path | None,
    *,
    prompt: str | None,
    readonly: bool,
    backend: Backend | None = None,
    tokenizer: Tokenizer | None = None,
) -> tuple[Session, list[str]]:
    """Open (or create) the loom and wrap it in a Session; also the notices for the user."""
    from loom.store.loom import Loom

    notices: list[str] = []
    if loom_path is None:
        last = last_loom()
        if last is not None and not prompt:
            loom_path = last
            notices.append(f"opened the last loom: {loom_path}")
        else:
            loom_path = new_loom_path()
            notices.append(f"new loom: {loom_path}")
    if loom_path.exists():
        loom = Loom.open(loom_path, readonly=readonly)
        if prompt:
            notices.append("--prompt ignored: the loom already exists (w writes a child)")
    else:
        if readonly:
            raise FileNotFoundError(f"{loom_path}: no such loom (read-only can't create one)")
        if backend is not None:
            from loom.store.tokenizer import FunctionTokenizer

            tokenizer = FunctionTokenizer(backend.tokens_for)
        loom = Loom.create(loom_path, title=loom_path.stem, prompt=prompt or "",
                           tokenizer=tokenizer)  # fmt: skip
    return Session(loom, backend), notices


def _prompt_tokenizer(model_path: Path | None) -> Tokenizer | None:
    """The model's tokenizer (vocabulary only, fast), so a new loom's prompt gets its token ids
    when it is written. On the first run this assembles the default model, with progress on
    stderr, before the screen opens. Without a usable model the prompt is stored untokenized and
    the app says why once it tries to load the model."""
    from loom.engine.errors import EngineError
    from loom.engine.models import resolve_model
    from loom.engine.tokenizer import load_tokenizer

    def progress(done: int, total: int) -> None:
        if total > 0 and sys.stderr.isatty():
            end = "\n" if done >= total else ""
            print(f"\rassembling the default model: {100 * done // total:3d}%", end=end,
                  file=sys.stderr, flush=True)  # fmt: skip

    try:
        return load_tokenizer(resolve_model(model_path, progress))
    except EngineError:
        return None


def run_app(
    loom_path: Path | None,
    *,
    prompt: str | None,
    model_path: Path | None,
    readonly: bool,
    replay: bool = False,
) -> int:
    """Run the TUI on a loom file (created if missing); returns the process exit code."""
    from loom.store.errors import LoomError

    try:
        config = load_config()
    except ConfigError as exc:
        print(f"loom: config: {exc}", file=sys.stderr)
        return 2
    if model_path is None and config.model:
        model_path = Path(config.model).expanduser()
    tokenizer = _prompt_tokenizer(model_path) if prompt and not replay else None
    try:
        session, notices = open_session(
            loom_path, prompt=prompt, readonly=readonly or replay, tokenizer=tokenizer
        )
    except (LoomError, OSError) as exc:
        print(f"loom: {exc}", file=sys.stderr)
        return 1
    remember_loom(Path(session.loom.path or "."))
    app: LoomApp
    if replay:
        from loom.tui.replay import ReplayApp

        try:
            app = ReplayApp(session.loom, config, notices)
        except LoomError as exc:
            print(f"loom: {exc}", file=sys.stderr)
            session.loom.close()
            return 1
    else:
        app = LoomApp(session, config, model_path=model_path, notices=notices)
    tune_gc()
    try:
        result = app.run()
    finally:
        session.loom.close()
    return int(result or app.return_code or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loom.tui.app", description=__doc__)
    parser.add_argument("loom", nargs="?", type=Path, help="a .loom file (created if missing)")
    parser.add_argument("--prompt", help="the root text of a new loom")
    parser.add_argument("--model", type=Path, help="a GGUF model (default: the config's)")
    parser.add_argument("--readonly", action="store_true", help="never write the loom file")
    args = parser.parse_args(argv)
    return run_app(args.loom, prompt=args.prompt, model_path=args.model, readonly=args.readonly)


if __name__ == "__main__":
    sys.exit(main())
