"""The reading pane: the whole path's text, every model token shaded by its probability.

A line-API widget: the text is wrapped once per path/width into lines of (cell text, token
index) runs, so moving the token cursor re-renders two lines and scrolling is free. Text is
made inert (`display.inert`) and drawn as segments: nothing in it is parsed as markup.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import BindingType
from textual.color import Color
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from loom.tokens import TokenArray
from loom.tui.display import ProbabilityScale, inert
from loom.tui.keymap import TOKEN_ACTIONS, bindings

EMPTY_TOKEN = "·"  # a token whose text is empty still gets a cell, so the cursor can reach it
SHADE_ALPHA = 0.6  # how strongly the probability colour tints the background
UNTOKENIZED_ID = -1  # the id shown for text that has no tokens yet
# A forking token: under the token, apart from the current node's single underline.
FORK_MARK = Style(underline2=True, bold=True)
# Tokens the model read but did not write (human or imported text it scored): shaded like the
# others, drawn in italics so read text is told apart from sampled text.
READ_MARK = Style(italic=True)


class PathText:
    """The text of a path: its tokens, which node each token belongs to, the current node.

    Drawing needs only the token texts and logprobs; the full TokenArray (alternatives,
    entropy) is joined from the nodes' arrays the first time something asks for it (the
    inspector), not on every move.
    """

    def __init__(
        self,
        parts: list[tuple[int, TokenArray]],
        current: int,
        readers: dict[int, str] | None = None,
    ) -> None:
        self.parts = parts
        self.current = current
        # Nodes whose tokens are a model's reading, not sampled: node id -> the model's name.
        self.readers = dict(readers or {})
        self.node_spans: dict[int, tuple[int, int]] = {}
        self.owners: list[int] = []
        for node_id, tokens in parts:
            self.node_spans[node_id] = (len(self.owners), len(self.owners) + len(tokens))
            self.owners.extend([node_id] * len(tokens))
        self.texts: list[str] = [t for _, tokens in parts for t in tokens.texts]
        self.logprobs = (
            np.concatenate([tokens.logprobs for _, tokens in parts]).astype(np.float64)
            if parts
            else np.zeros(0)
        )
        self._tokens: TokenArray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def tokens(self) -> TokenArray:
        if self._tokens is None:
            self._tokens = TokenArray.concat([tokens for _, tokens in self.parts])
        return self._tokens

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def reader_at(self, index: int) -> str | None:
        """The model that read token `index` (None: the token was sampled, or never read)."""
        return self.readers.get(self.owners[index]) if self.readers else None

    @classmethod
    def from_nodes(
        cls,
        nodes: list[tuple[int, str, TokenArray]],
        current: int,
        readers: dict[int, str] | None = None,
    ) -> PathText:
        """From (node id, text, tokens) root-first. Text the tokens don't cover (written without
        a model) is shown as one extra token without probabilities, so no text goes missing.
        `readers`: the nodes whose tokens a model read rather than wrote, and which model."""
        parts: list[tuple[int, TokenArray]] = []
        for node_id, text, tokens in nodes:
            covered = tokens.text
            if len(covered) < len(text) and text.startswith(covered):
                tokens = TokenArray.concat(
                    [tokens, TokenArray.from_ids([UNTOKENIZED_ID], [text[len(covered) :]])]
                )
            parts.append((node_id, tokens))
        return cls(parts, current, readers)


def shared_token_count(old: PathText, new: PathText) -> int:
    """How many leading tokens two paths share: those of their common leading nodes, if
    their text is unchanged (an edit keeps the id but not the text)."""
    shared = 0
    for (old_id, old_span), (new_id, new_span) in zip(
        old.node_spans.items(), new.node_spans.items(), strict=False
    ):
        if old_id != new_id or old_span != new_span:
            break
        shared = new_span[1]
    if old.texts[:shared] != new.texts[:shared]:
        return 0
    return shared


Run = tuple[str, int]  # (text, token index) — a stretch of one line from one token

# A wrap chunk: spaces then a word, or spaces alone, or one newline.
_CHUNK = re.compile(r"[^\S\n]*[^\s]+|[^\S\n]+|\n")


def _chunk_start(text: str, pos: int) -> int:
    """Where the wrap chunk holding `text[pos]` begins (see _CHUNK)."""
    j = pos
    while j > 0:
        before, here = text[j - 1], text[j]
        if before == "\n" or here == "\n" or (not before.isspace() and here.isspace()):
            break
        j -= 1
    return j


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


class WrappedText:
    """The path's display text (inert, one cell for empty tokens) wrapped to a width.

    Wrapping works on word chunks with string operations, not per character, and lines are
    char ranges: a long path costs little to lay out, and runs are cut only for drawn lines.
    """

    def __init__(
        self, texts: list[str], width: int, reuse: tuple[WrappedText, int] | None = None
    ) -> None:
        """`reuse`: a previous wrap at the same width whose first N tokens are the same as
        these (the shared ancestors when moving to a sibling); its lines up to the last one
        those tokens reach are kept and only the rest is wrapped."""
        shown = [t or EMPTY_TOKEN for t in texts]
        joined = "".join(shown)
        self.text = inert(joined)
        if self.text != joined:  # an escape is longer than its character: token by token
            shown = [inert(t) for t in shown]
            self.text = "".join(shown)
        lengths = np.fromiter(map(len, shown), dtype=np.int64, count=len(shown))
        self.token_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.token_ends = self.token_starts + lengths
        self.width = max(4, width)
        kept_starts: list[int] = []
        kept_ends: list[int] = []
        begin = 0
        if reuse is not None and reuse[0].width == self.width and reuse[1] > 0:
            old, shared_tokens = reuse
            # Every break is decided by the chunk after it; the chunk holding the last shared
            # char may continue differently now, so re-wrap from the line before that chunk.
            chunk = _chunk_start(self.text, int(old.token_ends[shared_tokens - 1]) - 1)
            last = int(np.searchsorted(old.line_starts, max(0, chunk - 1), side="right")) - 1
            last = max(0, last)
            kept_starts = old.line_starts[:last].tolist()
            kept_ends = old.line_ends[:last].tolist()
            begin = int(old.line_starts[last]) if last >= 0 else 0
        self.kept_lines = len(kept_starts)  # lines taken as they were from `reuse`
        starts, ends = self._wrap(begin)
        self.line_starts = np.asarray([*kept_starts, *starts], dtype=np.int64)
        self.line_ends = np.asarray([*kept_ends, *ends], dtype=np.int64)
        self.token_line = (
            np.searchsorted(self.line_starts, self.token_starts, side="right") - 1
        ).clip(min=0)

    line_starts: npt.NDArray[np.int64]
    line_ends: npt.NDArray[np.int64]

    def _wrap(self, begin: int) -> tuple[list[int], list[int]]:
        """Greedy word wrap of the text from char `begin` (a line start)."""
        text, width = self.text, self.width
        starts: list[int] = []
        ends: list[int] = []
        line_start = begin
        column = 0
        for match in _CHUNK.finditer(text, begin):
            s, e = match.span()
            chunk = match.group()
            if chunk == "\n":  # ends its line, keeping one visible cell
                starts.append(line_start)
                ends.append(e)
                line_start, column = e, 0
                continue
            w = _cells(chunk)
            if column + w <= width:
                column += w
                continue
            if column > 0:  # break before this chunk
                starts.append(line_start)
                ends.append(s)
                line_start, column = s, 0
            while w > width:  # a chunk wider than a line: hard breaks
                cut, cells = line_start, 0
                while cut < e and cells + _cells(text[cut]) <= width:
                    cells += _cells(text[cut])
                    cut += 1
                cut = max(cut, line_start + 1)
                starts.append(line_start)
                ends.append(cut)
                line_start = cut
                w = _cells(text[cut:e])
            column = w
        starts.append(line_start)
        ends.append(len(text))
        return starts, ends

    def __len__(self) -> int:
        return len(self.line_starts)

    def lines_of(self, tok: int) -> tuple[int, int]:
        """The first and last line token `tok` is drawn on."""
        last_char = max(int(self.token_starts[tok]), int(self.token_ends[tok]) - 1)
        last = int(np.searchsorted(self.line_starts, last_char, side="right")) - 1
        return int(self.token_line[tok]), max(int(self.token_line[tok]), last)

    def runs(self, y: int) -> list[Run]:
        """Line `y` as (text, token) runs; a newline is drawn as one space."""
        a, b = int(self.line_starts[y]), int(self.line_ends[y])
        if a >= b:
            return []
        tok = int(np.searchsorted(self.token_starts, a, side="right")) - 1
        out: list[Run] = []
        while tok < len(self.token_starts) and self.token_starts[tok] < b:
            lo = max(a, int(self.token_starts[tok]))
            hi = min(b, int(self.token_ends[tok]))
            if hi > lo:
                out.append((self.text[lo:hi].replace("\n", " "), tok))
            tok += 1
        return out


def wrap_tokens(texts: list[str], width: int) -> tuple[list[list[Run]], list[int]]:
    """Every wrapped line as runs, and each token's first line (tests and small uses)."""
    wrapped = WrappedText(texts, width)
    return [wrapped.runs(y) for y in range(len(wrapped))], [int(y) for y in wrapped.token_line]


class ReadingPane(ScrollView, can_focus=True):
    """The path text with shading, current-node marking and (when focused) a token cursor."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings(TOKEN_ACTIONS))
    DEFAULT_CSS = """
    ReadingPane { background: $surface; }
    """

    shading: reactive[bool] = reactive(True)

    class CursorMoved(Message):
        def __init__(self, index: int | None) -> None:
            super().__init__()
            self.index = index

    class BranchRequested(Message):
        """The user picked an alternative (rank 1..k) at a token, or asked to choose (None)."""

        def __init__(self, index: int, rank: int | None) -> None:
            super().__init__()
            self.index = index
            self.rank = rank

    class CensusRequested(Message):
        """A census at the token under the cursor (of each of its alternatives)."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.path: PathText | None = None
        self.cursor: int | None = None
        self._wrap = WrappedText([], 80)
        self._wrap_width = 0
        self._style_cache: dict[int, Style] = {}  # token index → style, filled as drawn
        self._shade_cache: dict[int, Style] = {}  # probability percent → shading style
        # Drawn lines (with the base style they were drawn on). Lines of the ancestors a move
        # keeps are kept too, so a step to a sibling draws only what changed.
        self._line_strips: dict[int, tuple[Style, Strip]] = {}
        self._paint_base: Style | None = None  # the style and width of the last paint
        self._paint_width = 0
        self.scale: ProbabilityScale | None = None
        self.node_colour = Color.parse("#ffa62b")
        self.cursor_colour = Color.parse("#3d8bfd")
        # Glyphs drawn where a node starts (persona collapse marks), by node id.
        self.marks: dict[int, str] = {}
        self._mark_at: dict[int, str] = {}  # first token index → glyphs
        self.fork_marks: frozenset[int] = frozenset()  # path token indices drawn double-underlined

    # ----------------------------------------------------------------- content

    def show(self, path: PathText, *, keep_cursor: bool = False) -> None:
        previous, self.path = self.path, path
        if not keep_cursor or self.cursor is None or self.cursor >= len(path):
            self.cursor = self._default_cursor()
        self._style_cache.clear()
        self._rewrap(force=True, previous=previous)
        # The old and the new current node change their marking: redraw their lines.
        for node_id in {path.current, previous.current if previous else path.current}:
            start, end = path.node_spans.get(node_id, (0, 0))
            if end > start:
                first, _ = self._wrap.lines_of(start)
                _, last = self._wrap.lines_of(end - 1)
                for y in range(first, last + 1):
                    self._line_strips.pop(y, None)
        self._scroll_to_current()
        self.post_message(self.CursorMoved(self.cursor if self.has_focus else None))

    def set_marks(self, marks: dict[int, str]) -> None:
        """Glyphs to draw at the start of nodes of the path (node id → glyphs); the text and
        the token positions are unchanged: a glyph takes the line's spare cells."""
        path = self.path
        at = {}
        if path is not None:
            for node_id, glyphs in marks.items():
                start, end = path.node_spans.get(node_id, (0, 0))
                if end > start:
                    at[start] = glyphs
        if at == self._mark_at:
            return
        self.marks, self._mark_at = dict(marks), at
        self._line_strips.clear()
        self.refresh()

    def set_fork_marks(self, indices: frozenset[int]) -> None:
        """Forking tokens of the path (a fork map's finding): drawn with a double underline."""
        if indices == self.fork_marks:
            return
        self.fork_marks = indices
        self._restyle()

    def set_colours(self, scale: ProbabilityScale, node: Color, cursor: Color) -> None:
        self.scale, self.node_colour, self.cursor_colour = scale, node, cursor
        self._restyle()

    def watch_shading(self) -> None:
        self._restyle()

    def _restyle(self) -> None:
        self._style_cache.clear()
        self._shade_cache.clear()
        self._line_strips.clear()
        self.refresh()

    def _default_cursor(self) -> int | None:
        """The last token of the current node (or of the path, if the node is empty)."""
        if self.path is None or not len(self.path):
            return None
        start, end = self.path.node_spans.get(self.path.current, (0, 0))
        return end - 1 if end > start else len(self.path) - 1

    def token_style(self, index: int) -> Style:
        """How token `index` is drawn: shaded by probability, marked if in the current node.
        Computed when first drawn, so a long path costs nothing until it is scrolled to."""
        cached = self._style_cache.get(index)
        if cached is not None:
            return cached
        path = self.path
        style = Style()
        if path is None or self.scale is None:
            return style
        lp = float(path.logprobs[index])
        if self.shading and not math.isnan(lp):
            bucket = int(math.exp(lp) * 100)  # 1% steps: few distinct styles
            style = self._shade_cache.get(bucket) or self._shade_cache.setdefault(
                bucket, self._shade(bucket / 100)
            )
            if path.reader_at(index) is not None:
                style = style + READ_MARK
        start, end = path.node_spans.get(path.current, (0, 0))
        if start <= index < end:
            style = style + (
                Style(bold=True, underline=True)
                if self.shading
                else Style(bold=True, color=self.node_colour.rich_color)
            )
        if index in self.fork_marks:
            style = style + FORK_MARK
        self._style_cache[index] = style
        return style

    def _shade(self, p: float) -> Style:
        assert self.scale is not None
        background = self.styles.background if self.styles.background.a else Color(0, 0, 0)
        bg = background.blend(self.scale.colour(p), SHADE_ALPHA)
        fg = bg + bg.get_contrast_text(0.9)
        return Style(bgcolor=bg.rich_color, color=fg.rich_color)

    # ----------------------------------------------------------------- layout

    def _rewrap(self, *, force: bool = False, previous: PathText | None = None) -> None:
        width = self.scrollable_content_region.width or self.size.width or 80
        if not force and width == self._wrap_width:
            return
        self._wrap_width = width
        texts = self.path.texts if self.path is not None else []
        reuse = None
        if previous is not None and self.path is not None:
            reuse = (self._wrap, shared_token_count(previous, self.path))
        self._wrap = WrappedText(texts, width, reuse)
        kept = self._wrap.kept_lines
        self._line_strips = {y: v for y, v in self._line_strips.items() if y < kept}
        self.virtual_size = Size(width, len(self._wrap))
        self.refresh()

    def on_resize(self, _event: events.Resize) -> None:
        self._rewrap()
        self._scroll_to_cursor()

    def _scroll_to_current(self) -> None:
        if self.path is None:
            return
        start, end = self.path.node_spans.get(self.path.current, (0, 0))
        if end > start:
            # Show the end of the current node: that's where the reader continues.
            y = int(self._wrap.token_line[end - 1])
            self.scroll_to(y=max(0, y - self.scrollable_content_region.height + 2), animate=False)
        else:
            self.scroll_end(animate=False)

    def _scroll_to_cursor(self) -> None:
        if self.cursor is None or self.cursor >= len(self._wrap.token_line):
            return
        y = int(self._wrap.token_line[self.cursor])
        top = int(self.scroll_y)
        height = max(1, self.scrollable_content_region.height)
        if y < top:
            self.scroll_to(y=y, animate=False)
        elif y >= top + height:
            self.scroll_to(y=y - height + 1, animate=False)

    # ----------------------------------------------------------------- rendering

    def render_lines(self, crop: Region) -> list[Strip]:
        # What every line shares, computed once per paint rather than once per line.
        self._paint_base = self.rich_style
        self._paint_width = self.scrollable_content_region.width
        self._paint_cursor = Style(
            bgcolor=self.cursor_colour.rich_color,
            color=self.cursor_colour.get_contrast_text(1.0).rich_color,
            bold=True,
        )
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        base = self._paint_base or self.rich_style
        width = self._paint_width or self.scrollable_content_region.width
        if self.path is None or not len(self.path):
            if index == 0:
                return Strip([Segment("(empty: write or generate a first node)", base)])
            return Strip.blank(width, base)
        if index >= len(self._wrap):
            return Strip.blank(width, base)
        cursor = self.cursor if self.has_focus else None
        cursor_here = False
        if cursor is not None and cursor < len(self._wrap.token_starts):
            first, last = self._wrap.lines_of(cursor)
            cursor_here = first <= index <= last
        cached = None if cursor_here else self._line_strips.get(index)
        if cached is not None and cached[0] == base:
            strip = cached[1]
        else:
            segments = []
            runs = self._wrap.runs(index)
            spare = width - sum(cell_len(text) for text, _ in runs) if self._mark_at else 0
            for text, tok in runs:
                style = self.token_style(tok)
                if tok == cursor:
                    style = style + self._paint_cursor
                glyphs = self._mark_at.get(tok)
                if (
                    glyphs
                    and cell_len(glyphs) <= spare
                    and int(self._wrap.token_line[tok]) == index
                ):
                    segments.append(Segment(glyphs, base + Style(bold=True, reverse=True)))
                    spare -= cell_len(glyphs)
                segments.append(Segment(text, base + style))
            strip = Strip(segments).adjust_cell_length(width, base)
            if not cursor_here:
                self._line_strips[index] = (base, strip)
        return strip.crop(scroll_x, scroll_x + width)

    def _refresh_token(self, tok: int | None) -> None:
        token_line = self._wrap.token_line
        if tok is None or tok >= len(token_line):
            return
        first = int(token_line[tok])
        last = int(token_line[tok + 1]) if tok + 1 < len(token_line) else first
        for y in range(first, last + 1):
            self.refresh_line(y)

    # ----------------------------------------------------------------- cursor

    def set_cursor(self, index: int | None) -> None:
        if self.path is None or not len(self.path):
            index = None
        elif index is not None:
            index = max(0, min(len(self.path) - 1, index))
        previous, self.cursor = self.cursor, index
        self._refresh_token(previous)
        self._refresh_token(index)
        self._scroll_to_cursor()
        self.post_message(self.CursorMoved(index if self.has_focus else None))

    def action_move(self, step: int) -> None:
        if self.cursor is not None:
            self.set_cursor(self.cursor + step)

    def action_line(self, step: int) -> None:
        if self.cursor is None or not len(self._wrap):
            return
        y = int(self._wrap.token_line[self.cursor])
        column = self._column_of(self.cursor, y)
        target = max(0, min(len(self._wrap) - 1, y + step))
        if target != y:
            self.set_cursor(self._token_at(target, column))

    def action_node_edge(self, direction: int) -> None:
        if self.cursor is None or self.path is None:
            return
        start, end = self.path.node_spans[self.path.owners[self.cursor]]
        self.set_cursor(start if direction < 0 else end - 1)

    def action_lowest(self) -> None:
        if self.path is None:
            return
        start, end = self.path.node_spans.get(self.path.current, (0, 0))
        lps = self.path.logprobs[start:end]
        if end > start and not np.isnan(lps).all():
            self.set_cursor(start + int(np.nanargmin(lps)))

    def action_census_here(self) -> None:
        if self.cursor is not None:
            self.post_message(self.CensusRequested(self.cursor))

    def action_branch(self) -> None:
        if self.cursor is not None:
            self.post_message(self.BranchRequested(self.cursor, None))

    def action_branch_alternative(self, rank: int) -> None:
        if self.cursor is not None:
            self.post_message(self.BranchRequested(self.cursor, rank))

    def _column_of(self, tok: int, y: int) -> int:
        column = 0
        for text, owner in self._wrap.runs(y):
            if owner == tok:
                return column
            column += cell_len(text)
        return column

    def _token_at(self, y: int, column: int) -> int:
        runs = self._wrap.runs(y)
        x = 0
        for text, tok in runs:
            x += cell_len(text)
            if column < x:
                return tok
        if runs:
            return runs[-1][1]
        # An empty line: the nearest token before it.
        for previous in range(y - 1, -1, -1):
            previous_runs = self._wrap.runs(previous)
            if previous_runs:
                return previous_runs[-1][1]
        return 0

    def on_click(self, event: events.Click) -> None:
        y = int(self.scroll_y) + event.y
        if 0 <= y < len(self._wrap) and self._wrap.runs(y):
            self.focus()
            self.set_cursor(self._token_at(y, event.x + int(self.scroll_x)))

    def on_focus(self) -> None:
        if self.cursor is None:
            self.cursor = self._default_cursor()
        self._refresh_token(self.cursor)
        self._scroll_to_cursor()
        self.post_message(self.CursorMoved(self.cursor))

    def on_blur(self) -> None:
        self._refresh_token(self.cursor)
        self.post_message(self.CursorMoved(None))

    # ----------------------------------------------------------------- queries

    def visible_text(self) -> str:
        """The wrapped text as drawn (tests read it)."""
        runs = (self._wrap.runs(y) for y in range(len(self._wrap)))
        return "\n".join("".join(text for text, _ in line) for line in runs)
