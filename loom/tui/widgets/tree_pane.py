"""The tree pane: a lazy view over the store.

Only the nodes on the current path are expanded; a node's children are read from the store the
first time it is expanded, so a 100k-node loom costs what its current path costs. The pane has no
keys of its own: loom's navigation keys move the current node (the app), and the pane follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import BindingType
from textual.color import Color
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from loom.app.navigation import NodeSummary
from loom.text import one_line
from loom.tui.display import ProbabilityScale, percent

# A node with more children than this shows the first ones and a "… N more" line: a loom with
# one enormous fan-out must not stall the pane.
MAX_CHILDREN_SHOWN = 500
STRIP_CACHE_SIZE = 4000
_LEVELS = "▁▂▃▄▅▆▇█"
COLLAPSE_GLYPH = "⚡"  # the persona posterior jumped at this node
MODE_COLLAPSE_GLYPH = "↻"  # the path fell into a repetition loop here
UNREAD_GLYPH = "•"  # never shown in the reading pane yet


class LabelStyle:
    """What a label's colours come from; rebuilt when the theme changes."""

    def __init__(
        self,
        scale: ProbabilityScale,
        personas: dict[str, str],
        muted: str,
        tag: str,
        background: Color,
        *,
        blind: bool = False,
    ) -> None:
        self.scale = scale
        # Blind reading: no probability, entropy, persona chip or persona mark in a label.
        self.blind = blind
        self.background = background
        self.personas = personas  # persona name → colour
        self.muted = muted
        self.tag = tag
        # model name → (chip, colour); empty while the loom knows one model (no chip needed)
        self.models: dict[str, tuple[str, str]] = {}


def node_label(
    node: NodeSummary, style: LabelStyle, *, is_root: bool = False, hoisted: bool = False
) -> Text:
    """One line: probability glyph and %, the writing model's chip (when the loom has several
    models), persona chip, marks, then the text preview. The tree's root line says "root", or
    the node's id when it is a hoisted node."""
    label = Text(no_wrap=True, overflow="ellipsis")
    p = None if style.blind else node.mean_prob
    if is_root:
        label.append(f"⤒ #{node.id} " if hoisted else "◆ root ", Style(bold=True))
    elif style.blind:
        label.append("  " if node.author == "model" else "✎ ", Style(color=style.muted))
        label.append("    ", Style())
    elif p is None:
        label.append("✎ ", Style(color=style.muted))
        label.append("    ", Style())
    else:
        prob_colour = style.scale.text_colour(p, style.background).rich_color
        label.append(_LEVELS[min(7, int(p * 8))] + " ", Style(color=prob_colour))
        label.append(percent(p), Style(color=prob_colour))
    label.append(" ")
    if node.mean_entropy is not None and not style.blind:
        label.append(f"H{node.mean_entropy:.2f} ", Style(color=style.muted))
    if not node.read:
        label.append(UNREAD_GLYPH + " ", Style(color=style.tag, bold=True))
    if node.model is not None and style.models and not style.blind:
        chip, colour = style.models.get(node.model, (node.model[:12], style.muted))
        label.append(f"‹{chip}› ", Style(color=colour))
    # Blind reading: nothing may tell which persona (or model) a branch voices.
    if node.persona and not style.blind:
        chip = f"[{node.persona}{'*' if node.persona_is_manual else ''}]"
        label.append(chip, Style(color=style.personas.get(node.persona, style.tag), bold=True))
        label.append(" ")
    if node.collapse and not style.blind:
        label.append(COLLAPSE_GLYPH + " ", Style(color=style.tag, bold=True))
    if node.mode_collapse and not style.blind:
        label.append(MODE_COLLAPSE_GLYPH + " ", Style(color=style.tag, bold=True))
    if node.bookmarked:
        label.append("★ ", Style(color=style.tag))
    for tag in node.tags[:3]:
        label.append(f"#{tag} ", Style(color=style.tag, italic=True))
    preview = one_line(node.preview, 60) or "∅"
    label.append(preview, Style(dim=node.pruned, strike=node.pruned))
    return label


class LoomTree(Tree[int], inherit_bindings=False):
    """Tree nodes carry loom node ids as data. See the module docstring for the laziness."""

    BINDINGS: ClassVar[list[BindingType]] = []
    ICON_NODE = "▸ "
    ICON_NODE_EXPANDED = "▾ "

    def __init__(self, **kwargs: object) -> None:
        super().__init__(Text("loom"), **kwargs)  # type: ignore[arg-type]
        self.auto_expand = False
        self.show_root = True
        self.guide_depth = 2
        self._by_loom_id: dict[int, TreeNode[int]] = {}
        self._loaded: set[int] = set()
        # Set by the app: reads a node's children (already filtered and sorted) from the store.
        self.children_of: Callable[[int], list[NodeSummary]] = lambda _id: []
        self.label_style: LabelStyle | None = None
        self.hoisted = False  # the root line is a hoisted node
        # Rendered lines by what they show, not by line number: moving through the tree
        # shifts lines up and down, and Tree's own cache (by line) would redraw them all.
        self._strips: dict[tuple[object, ...], Strip] = {}

    # ----------------------------------------------------------------- building

    def reset_to(self, root: NodeSummary, *, hoisted: bool = False) -> None:
        """Forget everything and start again from the root (theme change, undo, sort…), or from
        a hoisted node shown as the root."""
        self.hoisted = hoisted
        self.clear()
        self._strips.clear()
        self._by_loom_id = {root.id: self.root}
        self._loaded = set()
        self.root.data = root.id
        self.root.set_label(self._label(root, is_root=True))
        self.root.allow_expand = root.n_children > 0

    def _label(self, node: NodeSummary, *, is_root: bool = False) -> Text:
        assert self.label_style is not None
        return node_label(node, self.label_style, is_root=is_root, hoisted=is_root and self.hoisted)

    def _add(self, parent: TreeNode[int], node: NodeSummary) -> TreeNode[int]:
        child = parent.add(self._label(node), node.id, allow_expand=node.n_children > 0)
        self._by_loom_id[node.id] = child
        return child

    def load_children(self, tree_node: TreeNode[int], *, force: bool = False) -> None:
        """Fill a tree node's children from the store (once, unless forced)."""
        loom_id = tree_node.data
        if loom_id is None or (loom_id in self._loaded and not force):
            return
        self._forget_below(tree_node)
        tree_node.remove_children()
        kids = self.children_of(loom_id)
        for kid in kids[:MAX_CHILDREN_SHOWN]:
            self._add(tree_node, kid)
        if len(kids) > MAX_CHILDREN_SHOWN:
            more = Text(f"… {len(kids) - MAX_CHILDREN_SHOWN} more (open a child to see it)")
            tree_node.add_leaf(more, None)
        tree_node.allow_expand = bool(kids)
        self._loaded.add(loom_id)

    def _forget_below(self, tree_node: TreeNode[int]) -> None:
        stack = list(tree_node.children)
        while stack:
            node = stack.pop()
            if node.data is not None:
                self._by_loom_id.pop(node.data, None)
                self._loaded.discard(node.data)
            stack.extend(node.children)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[int]) -> None:
        # A click on the ▸ icon: load on demand.
        self.load_children(event.node)

    # ----------------------------------------------------------------- following the path

    def show_path(self, path_ids: list[int], previous_path: Iterable[int] = ()) -> None:
        """Expand the path root→current, collapse what was expanded off it, put the cursor on
        the current node. `path_ids` is root-first and ends with the current node."""
        on_path = set(path_ids)
        for loom_id in previous_path:
            node = self._by_loom_id.get(loom_id)
            if node is not None and loom_id not in on_path and node.is_expanded:
                node.collapse()
        tree_node = self.root
        for depth, loom_id in enumerate(path_ids):
            if depth:
                found = self._by_loom_id.get(loom_id)
                if found is None or found.parent is not tree_node:
                    # Not shown yet (e.g. beyond MAX_CHILDREN_SHOWN): show it on its own.
                    self.load_children(tree_node)
                    found = self._by_loom_id.get(loom_id)
                    if found is None:
                        found = self._add(tree_node, self.summary_of(loom_id))
                tree_node = found
            self.load_children(tree_node)
            if tree_node.allow_expand and not tree_node.is_expanded:
                tree_node.expand()
        self.last_line  # noqa: B018 — reading it rebuilds the line index move_cursor needs
        self.move_cursor(tree_node)
        self.scroll_to_node(tree_node, animate=False)

    summary_of: Callable[[int], NodeSummary]

    # ----------------------------------------------------------------- rendering

    def get_label_width(self, node: TreeNode[int]) -> int:
        # Tree measures every line on every change by rendering its label; the label's own
        # length plus the icon is the same number without the rendering.
        return node._label.cell_len + (len(self.ICON_NODE) if node._allow_expand else 0)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line_no = y + scroll_y
        node = self.get_node_at_line(line_no)
        if node is None:
            return super().render_line(y)
        # Guides depend on each ancestor's place among its siblings and on whether the cursor
        # sits on it (the guides under the cursor node are highlighted).
        guides = []
        walker: TreeNode[int] | None = node
        while walker is not None:
            guides.append((walker.is_last, walker._selected))
            walker = walker.parent
        key = (
            node.id,
            node._updates,  # bumped by set_label and add
            node.is_expanded,
            node.allow_expand,
            tuple(guides),
            line_no == self.cursor_line,
            line_no == self.hover_line,
            self.has_focus,
            self.size.width,
            scroll_x,
        )
        strip = self._strips.get(key)
        if strip is None:
            strip = super().render_line(y)
            if len(self._strips) > STRIP_CACHE_SIZE:
                self._strips.clear()
            self._strips[key] = strip
        return strip

    async def _on_click(self, event: events.Click) -> None:
        # Cached lines carry the line number they were first drawn at, so clicks are mapped
        # by position instead (Tree's own handler reads the line from the cell's metadata).
        event.prevent_default()
        line_no = event.y + int(self.scroll_y)
        node = self.get_node_at_line(line_no)
        if node is None:
            return
        if event.style.meta.get("toggle", False):
            if node.allow_expand:
                self.load_children(node)
                node.toggle()
            return
        self.move_cursor(node)
        self.post_message(Tree.NodeSelected(node))

    # ----------------------------------------------------------------- lookups

    def node_for(self, loom_id: int) -> TreeNode[int] | None:
        return self._by_loom_id.get(loom_id)

    def refresh_label(self, summary: NodeSummary) -> None:
        node = self._by_loom_id.get(summary.id)
        if node is not None:
            node.set_label(self._label(summary, is_root=node is self.root))
            node.allow_expand = summary.n_children > 0 or bool(node.children)

    # ----------------------------------------------------------------- live generation

    def add_pending(self, parent_id: int, count: int) -> list[TreeNode[int]]:
        """Placeholder lines for branches being generated under `parent_id` (not in the store
        yet: they become real nodes when the generation is written)."""
        parent = self._by_loom_id.get(parent_id)
        if parent is None:
            return []
        self.load_children(parent)
        parent.allow_expand = True
        parent.expand()
        return [parent.add_leaf(pending_label("", i), None) for i in range(count)]

    def remove_pending(self, nodes: list[TreeNode[int]]) -> None:
        for node in nodes:
            # A rebuild (theme switch…) may already have detached the placeholder.
            parent = node.parent
            if parent is not None and any(child is node for child in parent.children):
                node.remove()


def pending_label(text: str, index: int) -> Text:
    label = Text(no_wrap=True, overflow="ellipsis")
    label.append(f"⋯ #{index + 1} ", Style(italic=True, dim=True))
    label.append(one_line(text[-60:], 60) if text else "waiting for tokens", Style(italic=True))
    return label
