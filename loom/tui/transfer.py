"""Export and import in the app: a format, a scope and a file picked in dialogs, the work in a
thread worker (streamed, any size of loom) with its progress in the status bar.

An import writes a new loom file; the app then offers to open it in place of this one (the app
exits with `open_next` set and launch.py opens that loom in a new app).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work

from loom.app.transfer import import_file
from loom.tui.base import LoomAppBase
from loom.tui.messages import ExportDone, ImportDone, TransferProgress
from loom.tui.screens.dialogs import ChoiceScreen, PromptScreen

# What an export covers: (label, scope) with scope "loom", "subtree" (under the current node) or
# "path" (from the root to the current node).
EXPORT_SCOPES = (
    ("the whole loom", "loom"),
    ("the subtree under the current node", "subtree"),
    ("the path from the root to the current node", "path"),
)


def free_name(folder: Path, stem: str) -> Path:
    """`folder/stem.loom`, or `stem-2.loom`… if that is taken (an import never replaces a file)."""
    candidate, n = folder / f"{stem}.loom", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}.loom"
    return candidate


class TransferActions(LoomAppBase):
    # ----------------------------------------------------------------- export

    def action_export(self) -> None:
        from loom.formats import FORMATS

        writable = [f for f in FORMATS.values() if f.can_write]
        options = [(Text(f"{f.name:<12} {f.description}"), f.name) for f in writable]

        def picked_format(fmt: str | None) -> None:
            if fmt is None:
                return
            scopes = [(Text(label), scope) for label, scope in EXPORT_SCOPES]

            def picked_scope(scope: str | None) -> None:
                if scope is None:
                    return
                base = self.session.file or Path("loom.loom")
                suffix = FORMATS[fmt].suffixes[0]
                stem = base.stem if scope == "loom" else f"{base.stem}-{scope}-{self.current}"
                default = base.with_name(stem + suffix)

                def done(target: str | None) -> None:
                    if target:
                        self.export_to(fmt, Path(target).expanduser(), scope)

                self.push_screen(PromptScreen(f"Export {scope} as {fmt} to", str(default)), done)

            if self.current == self.session.root_id:
                picked_scope("loom")  # from the root, subtree and path add nothing to ask about
            else:
                self.push_screen(ChoiceScreen("Export what", scopes), picked_scope)

        self.push_screen(ChoiceScreen("Export format", options), picked_format)

    def export_to(self, fmt: str, target: Path, scope: str = "loom") -> None:
        if self.exporting:
            self.notify("an export or import is already running", severity="warning")
            return
        self.exporting = True
        self.remember_current()  # the file records the current node
        self.status.show(saved=f"exporting to {target.name}…")
        node = None if scope == "loom" else self.current
        self._export_worker(fmt, target, node, scope == "path")

    @work(thread=True, group="transfer", exit_on_error=False)
    def _export_worker(self, fmt: str, target: Path, node: int | None, path: bool) -> None:
        def progress(done: int, total: int) -> None:
            self.post_message(TransferProgress("exporting", done, total))

        # Streamed from a snapshot on a connection of its own; never over a loom file (this
        # one, the replayed one, another): the writer refuses those.
        try:
            nodes = self.session.export(fmt, target, node=node, path=path, progress=progress)
        except Exception as exc:  # shown on the UI thread
            self.post_message(ExportDone(target, 0, exc))
        else:
            self.post_message(ExportDone(target, nodes, None))

    def on_transfer_progress(self, message: TransferProgress) -> None:
        if message.total:
            self.status.show(saved=f"{message.verb}… {message.done * 100 // message.total}%")

    def _transfer_over(self) -> None:
        self.exporting = False
        self.status.show(saved="read-only" if self.session.readonly else "saved")

    def on_export_done(self, message: ExportDone) -> None:
        self._transfer_over()
        if message.error is not None:
            self.notify(str(message.error), severity="error", title="Not exported")
        else:
            nodes = f"{message.nodes} node{'s' if message.nodes != 1 else ''}"
            self.notify(f"exported {nodes} to {message.target}", timeout=4)

    # ----------------------------------------------------------------- import

    def action_import(self) -> None:
        from loom.formats import FORMATS

        readable = ", ".join(f.name for f in FORMATS.values() if f.can_read)

        def picked_source(source: str | None) -> None:
            if not source:
                return
            src = Path(source).expanduser()
            folder = self.session.file.parent if self.session.file else src.parent
            default = free_name(folder.resolve(), src.stem)

            def picked_target(target: str | None) -> None:
                if target:
                    self.import_from(src, Path(target).expanduser())

            prompt = PromptScreen("Import into a new loom file", str(default))
            self.push_screen(prompt, picked_target)

        self.push_screen(
            PromptScreen("Import a file", placeholder="path of the file", hint=readable),
            picked_source,
        )

    def import_from(self, src: Path, target: Path) -> None:
        if self.exporting:
            self.notify("an export or import is already running", severity="warning")
            return
        if not src.is_file():
            self.notify(f"no such file: {src}", severity="error", title="Not imported")
            return
        self.exporting = True
        self.status.show(saved=f"importing {src.name}…")
        self._import_worker(src, target)

    @work(thread=True, group="transfer", exit_on_error=False)
    def _import_worker(self, src: Path, target: Path) -> None:
        def progress(done: int, total: int) -> None:
            self.post_message(TransferProgress("importing", done, total))

        try:  # a new file only: import_file refuses an existing path and leaves nothing on failure
            imported = import_file(src, target, progress=progress)
        except Exception as exc:  # shown on the UI thread
            self.post_message(ImportDone(target, 0, [], exc))
        else:
            self.post_message(ImportDone(imported.path, imported.nodes, imported.warnings, None))

    def on_import_done(self, message: ImportDone) -> None:
        self._transfer_over()
        if message.error is not None:
            self.notify(str(message.error), severity="error", title="Not imported")
            return
        for warning in message.warnings[:3]:
            self.notify(warning, severity="warning", timeout=8)
        nodes = f"{message.nodes} node{'s' if message.nodes != 1 else ''}"
        self.notify(f"imported {nodes} into {message.target}", timeout=6)
        options = [(Text(f"open {message.target.name} now"), True), (Text("stay here"), False)]

        def chosen(open_it: bool | None) -> None:
            if open_it and self.generation is not None:
                self.notify("a generation is running: open the new loom once it ends")
            elif open_it:
                self.open_next = message.target
                self.remember_current()
                self.exit(0)

        self.push_screen(ChoiceScreen(f"Imported {nodes}", options), chosen)
