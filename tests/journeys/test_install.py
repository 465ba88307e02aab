"""Install as a user installs: `pip install .` (not editable) into a fresh venv, then use the
installed `loom` from a folder outside the repository, so nothing can come from the source tree.

pip reuses the llama-cpp-python wheel the test command's own install built and cached, so this
costs a venv and a copy of the dependencies, not a compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.model, pytest.mark.slow]

APP_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    import loom
    from loom.config import load_config
    from loom.paths import shipped_dir
    from loom.store.loom import Loom
    from loom.tui.app import LoomApp
    from loom.tui.launch import open_session

    path = Path(sys.argv[1])
    session, notices = open_session(path, prompt=None, readonly=False)
    app = LoomApp(session, load_config(), notices=notices)

    async def main():
        async with app.run_test(size=(110, 32)) as pilot:
            await app.workers.wait_for_complete()  # the model loads in a worker
            await pilot.pause()
            for theme in ("loom-dark", "loom-light", "loom-cividis"):
                app.theme = theme
                await pilot.pause()
                print("theme", app.current_theme.name)
            await pilot.press("g")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("q")

    asyncio.run(main())
    session.loom.close()
    with Loom.open(path, readonly=True) as grown:
        print("children", len(grown.children(grown.root_id)))
    print("package", Path(loom.__file__).parent)
    print("themes", shipped_dir("themes"))
    """
)


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_a_non_editable_install_works_outside_the_repository(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        **os.environ,
        "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DLLAVA_BUILD=OFF"),
        "LOOM_CONFIG": str(tmp_path / "config.toml"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    bin_dir = venv / "bin"
    _run([str(bin_dir / "pip"), "install", "--quiet", str(ROOT)], tmp_path, env, timeout=2400)

    work = tmp_path / "work"
    work.mkdir()
    loom = str(bin_dir / "loom")
    doctor = _run([loom, "doctor"], work, env, timeout=300)
    assert "decode check" in doctor and "everything checked works" in doctor

    _run([loom, "new", "s.loom", "--personas", "croissant"], work, env, timeout=120)
    ids = _run([loom, "generate", "s.loom", "-n", "2", "--max-tokens", "6", "--seed", "1"],
               work, env, timeout=300).split()  # fmt: skip
    assert ids == ["2", "3"]
    shown = _run([loom, "show", "s.loom", "--node", "2"], work, env, timeout=60)
    assert shown.startswith("Alice:")  # the croissant set's prompt, then the branch

    script = tmp_path / "drive_app.py"
    script.write_text(APP_SCRIPT, encoding="utf-8")
    out = _run([str(bin_dir / "python"), str(script), "s.loom"], work, env, timeout=600)
    assert [line for line in out.splitlines() if line.startswith("theme ")] == [
        "theme loom-dark",
        "theme loom-light",
        "theme loom-cividis",
    ]
    assert "children 6" in out  # the two from the CLI and four from `g` (the default n)
    package = next(line for line in out.splitlines() if line.startswith("package "))
    assert str(venv) in package and str(ROOT) not in package
    themes = next(line for line in out.splitlines() if line.startswith("themes "))
    assert str(venv) in themes
