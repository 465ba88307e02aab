"""The block multiverse: the likeliest next tokens a few steps deep, each block as tall as its
probability. Choosing a block creates that branch (a model-authored child with those tokens).

Drawn as an icicle: one column per step; a block's children share its rows in proportion to
their conditional probabilities (the model's top-k; what the top-k leaves out is the grey rest).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Static

from loom.app.multiverse import MultiverseNode
from loom.text import one_line
from loom.tui.display import ProbabilityScale, percent
from loom.tui.messages import MultiverseBuilt, MultiverseProgress

SHADE_ALPHA = 0.55


def allocate_rows(probs: Sequence[float], rows: int) -> list[int]:
    """Split `rows` among blocks in proportion to `probs` (the rest of the mass, 1-Σp, gets the
    leftover), largest remainder first. Blocks come before the rest: a block left without a row
    takes one from the rest, then from the tallest block, so every token stays reachable while
    rows remain. Returns one count per block plus one for the rest."""
    rest = max(0.0, 1.0 - sum(probs))
    shares = [p * rows for p in (*probs, rest)]
    counts = [int(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_remainder[: rows - sum(counts)]:
        counts[i] += 1
    for i in range(len(probs)):
        if counts[i]:
            continue
        if counts[-1] > 0:
            counts[-1] -= 1
            counts[i] = 1
            continue
        donor = max(range(len(probs)), key=lambda j: counts[j])
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] = 1
    return counts


@dataclass
class Block:
    node: MultiverseNode | None  # None: the rest of the probability mass
    path: tuple[int, ...]  # child indices from the root
    depth: int
    top: int
    height: int


def layout_blocks(root: MultiverseNode, height: int, depth: int) -> list[Block]:
    blocks: list[Block] = []

    def place(node: MultiverseNode, path: tuple[int, ...], top: int, rows: int) -> None:
        level = len(path)
        if level >= depth or not node.children:
            return
        counts = allocate_rows([c.prob for c in node.children], rows)
        y = top
        for i, child in enumerate(node.children):
            if counts[i]:
                blocks.append(Block(child, (*path, i), level, y, counts[i]))
                place(child, (*path, i), y, counts[i])
            y += counts[i]
        if counts[-1]:
            blocks.append(Block(None, (*path, -1), level, y, counts[-1]))

    place(root, (), 0, height)
    return blocks


class MultiverseView(Widget, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "sibling(-1)", "Previous", show=False, id="multiverse.up"),
        Binding("down,j", "sibling(1)", "Next", show=False, id="multiverse.down"),
        Binding("right,l", "deeper", "Deeper", show=False, id="multiverse.deeper"),
        Binding("left,h", "shallower", "Back", show=False, id="multiverse.back"),
    ]
    DEFAULT_CSS = "MultiverseView { height: 1fr; }"

    def __init__(self, scale: ProbabilityScale, background: Color, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.root: MultiverseNode | None = None
        self.depth = 0
        self.selected: tuple[int, ...] = (0,)
        self._scale = scale
        self._background = background
        self._blocks: list[Block] = []
        self._laid_out_for: tuple[int, int] = (0, 0)
        self.on_select: Callable[[], None] = lambda: None

    def set_tree(self, root: MultiverseNode, depth: int) -> None:
        self.root, self.depth = root, depth
        self.selected = (0,)
        self._laid_out_for = (0, 0)
        self.refresh()
        self.on_select()

    def blocks(self) -> list[Block]:
        size = (self.size.width, self.size.height)
        if self.root is not None and size != self._laid_out_for:
            self._blocks = layout_blocks(self.root, max(1, self.size.height), self.depth)
            self._laid_out_for = size
        return self._blocks

    def selected_path(self) -> list[MultiverseNode]:
        node, out = self.root, []
        for i in self.selected:
            if node is None or not 0 <= i < len(node.children):
                break
            node = node.children[i]
            out.append(node)
        return out

    def _visible(self, path: tuple[int, ...]) -> bool:
        return any(b.path == path and b.node is not None for b in self.blocks())

    def _move_to(self, path: tuple[int, ...]) -> None:
        if self._visible(path):
            self.selected = path
            self.refresh()
            self.on_select()

    def action_sibling(self, step: int) -> None:
        *head, last = self.selected
        self._move_to((*head, last + step))

    def action_deeper(self) -> None:
        self._move_to((*self.selected, 0))

    def action_shallower(self) -> None:
        if len(self.selected) > 1:
            self._move_to(self.selected[:-1])

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if self.root is None or self.depth == 0:
            return Strip.blank(width, base)
        column = max(8, width // self.depth)
        segments: list[Segment] = []
        selected = self.selected
        for level in range(self.depth):
            col_width = column if level < self.depth - 1 else max(0, width - column * level)
            block = next(
                (b for b in self.blocks() if b.depth == level and b.top <= y < b.top + b.height),
                None,
            )
            if block is None:
                segments.append(Segment(" " * col_width, base))
                continue
            on_path = selected[: len(block.path)] == block.path
            segments.append(
                self._block_cell(block, y, col_width, block.path == selected, on_path, base)
            )
        return Strip(segments).adjust_cell_length(width, base)

    def _block_cell(
        self, block: Block, y: int, width: int, selected: bool, on_path: bool, base: Style
    ) -> Segment:
        node = block.node
        if node is None:
            colour = self._background.blend(Color(128, 128, 128), 0.25)
            text = "⋯ rest" if y == block.top else ""
        else:
            colour = self._background.blend(self._scale.colour(node.prob), SHADE_ALPHA)
            label = one_line(node.text).replace(" ", "·") or "∅"
            text = f"{label} {percent(node.prob).strip()}" if y == block.top else ""
        fg = colour + colour.get_contrast_text(0.9)
        style = base + Style(bgcolor=colour.rich_color, color=fg.rich_color)
        if selected:
            style += Style(reverse=True, bold=True)
        elif on_path:
            style += Style(bold=True, italic=True)
        last_row = y == block.top + block.height - 1 and block.height > 1
        if last_row:
            style += Style(underline=True)
        cell = ("▏" + text)[: width - 1] if width > 1 else ""
        return Segment(cell + " " * max(0, width - cell_len(cell)), style)


def path_summary(path: list[MultiverseNode]) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    if not path:
        out.append("building…", Style(italic=True))
        return out
    out.append("path ")
    for node in path:
        out.append("‹" + one_line(node.text) + "›", Style(bold=True))
    out.append(f"   joint p {percent(path[-1].joint).strip()}")
    out.append(f"   this step {percent(path[-1].prob).strip()}")
    return out


class MultiverseScreen(ModalScreen[list[MultiverseNode] | None]):
    """Builds the multiverse in a worker (holding the engine lock), then lets the user choose."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="multiverse.close"),
        Binding("enter", "choose", "Create branch", id="multiverse.choose"),
    ]
    DEFAULT_CSS = """
    MultiverseScreen { align: center middle; }
    MultiverseScreen > Vertical {
        width: 100%; height: 100%; border: round $primary; background: $panel;
    }
    MultiverseScreen #mv-summary { height: 1; }
    MultiverseScreen #mv-context { height: 1; color: $text-muted; }
    MultiverseScreen .hint { color: $text-muted; }
    """

    def __init__(
        self,
        build: Callable[[threading.Event, Callable[[int, int], None]], MultiverseNode],
        context: str,
        depth: int,
        scale: ProbabilityScale,
        background: Color,
    ) -> None:
        super().__init__()
        self._build = build
        self._context_text = context
        self._depth = depth
        self._scale = scale
        self._background = background
        self._cancel = threading.Event()
        self.root: MultiverseNode | None = None

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Block multiverse — the likeliest next tokens"
            yield Static(Text("…" + one_line(self._context_text[-100:]),
                              no_wrap=True, overflow="ellipsis", justify="right"),
                         id="mv-context")  # fmt: skip
            yield ProgressBar(total=None, show_eta=False, id="mv-progress")
            yield MultiverseView(self._scale, self._background, id="mv-view")
            yield Static(path_summary([]), id="mv-summary")
            yield Label(
                "↑↓ siblings · → deeper · ← back · enter create this branch · esc close",
                classes="hint",
            )

    def on_mount(self) -> None:
        view = self.query_one(MultiverseView)
        view.on_select = self._show_selection
        view.focus()
        self._run()

    @work(thread=True, group="multiverse", exit_on_error=False)
    def _run(self) -> None:
        def progress(done: int, total: int) -> None:
            self.post_message(MultiverseProgress(done, total))

        try:
            root = self._build(self._cancel, progress)
        except Exception as exc:  # reported on the UI thread
            self.post_message(MultiverseBuilt(None, exc))
        else:
            self.post_message(MultiverseBuilt(root, None))

    def on_multiverse_progress(self, message: MultiverseProgress) -> None:
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    def on_multiverse_built(self, message: MultiverseBuilt) -> None:
        if message.error is not None or message.root is None:
            self.app.notify(f"multiverse failed: {message.error}", severity="error")
            self.dismiss(None)
        elif not self._cancel.is_set():
            self.root = message.root
            self.query_one(ProgressBar).display = False
            self.query_one(MultiverseView).set_tree(self.root, self._depth)

    def _show_selection(self) -> None:
        path = self.query_one(MultiverseView).selected_path()
        self.query_one("#mv-summary", Static).update(path_summary(path))

    def action_choose(self) -> None:
        path = self.query_one(MultiverseView).selected_path()
        if self.root is not None and path:
            self.dismiss(path)

    def action_close(self) -> None:
        self._cancel.set()
        self.dismiss(None)
