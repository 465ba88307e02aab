"""Starting the app: which loom to open (the last one, a new one from a prompt), the config, the
prompt's tokens, garbage-collector tuning, and running LoomApp or ReplayApp. `loom`, `loom open`
and `loom replay` (cli.py) call `run_app`; nothing else starts the app.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from pathlib import Path

from loom.app.session import Session
from loom.config import Config, ConfigError, load_config
from loom.engine.backend import Backend
from loom.engine.errors import EngineError
from loom.paths import config_dir
from loom.store.errors import LoomError
from loom.store.loom import Loom
from loom.store.tokenizer import FunctionTokenizer, Tokenizer
from loom.tui.app import LoomApp
from loom.tui.replay import ReplayApp


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
    tokenizer: Tokenizer | None = None,
    backend: Backend | None = None,
) -> tuple[Session, list[str]]:
    """Open (or create) the loom and wrap it in a Session; also the notices for the user.
    `backend`: a model already loaded (tests share one), which also tokenizes a new prompt."""
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
            tokenizer = FunctionTokenizer(backend.tokens_for)
        loom = Loom.create(loom_path, title=loom_path.stem, prompt=prompt or "",
                           tokenizer=tokenizer)  # fmt: skip
    return Session(loom, backend), notices


def _prompt_tokenizer(model_path: Path | None) -> Tokenizer | None:
    """The model's tokenizer (vocabulary only, fast), so a new loom's prompt gets its token ids
    when it is written. On the first run this assembles the default model, with progress on
    stderr, before the screen opens. Without a usable model the prompt is stored untokenized and
    the app says why once it tries to load the model."""
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
    remote: Backend | None = None,
) -> int:
    """Run the app on a loom file (created if missing); returns the process exit code.
    `remote`: a completion server already connected (`--remote URL`), used instead of a model
    file; it also tokenizes a new prompt."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"loom: config: {exc}", file=sys.stderr)
        return 2
    if model_path is None and config.model:
        model_path = Path(config.model).expanduser()
    if replay:
        assert loom_path is not None, "`loom replay` names its loom"
        return _run_replay(loom_path, config)
    tokenizer = _prompt_tokenizer(model_path) if prompt and remote is None else None
    try:
        session, notices = open_session(
            loom_path, prompt=prompt, readonly=readonly, tokenizer=tokenizer, backend=remote
        )
    except (LoomError, OSError) as exc:
        print(f"loom: {exc}", file=sys.stderr)
        return 1
    tune_gc()
    while True:
        remember_loom(session.file or Path("."))
        app = LoomApp(session, config, model_path=model_path, notices=notices)
        try:
            result = app.run()
        finally:
            session.close()
        if app.open_next is None:
            return int(result or app.return_code or 0)
        # An import in the app asked to open the loom it made, in place of this one.
        try:
            session, notices = open_session(
                app.open_next, prompt=None, readonly=False, tokenizer=None, backend=remote
            )
        except (LoomError, OSError) as exc:
            print(f"loom: {exc}", file=sys.stderr)
            return 1


def _run_replay(loom_path: Path, config: Config) -> int:
    try:
        source = Loom.open(loom_path, readonly=True)
    except LoomError as exc:
        print(f"loom: {exc}", file=sys.stderr)
        return 1
    try:
        app = ReplayApp(source, config)
    except LoomError as exc:
        print(f"loom: {exc}", file=sys.stderr)
        source.close()
        return 1
    remember_loom(loom_path)
    tune_gc()
    try:
        result = app.run()
    finally:
        source.close()
    return int(result or app.return_code or 0)
