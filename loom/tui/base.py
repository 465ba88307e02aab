"""LoomAppBase: the app's state, layout, theme handling and navigation.

The actions live in mixins (generation.py, editing.py, personas.py) over this base; app.py puts
them together. Every piece of state the mixins share is declared here, in `__init__`. The loom is
read and written through the Session on the UI thread; workers do model work and hand their
results back as messages (messages.py), which the UI thread writes and shows.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.timer import Timer
from textual.widgets import Footer, ProgressBar, Static

from loom.app.forks import ForkMap, ForkPoint
from loom.app.growth import Growth
from loom.app.hoist import Hoist, breadcrumb
from loom.app.models import LegendEntry, chip_names, short_name
from loom.app.navigation import NodeSummary, View
from loom.app.reading import ChildFilter
from loom.app.session import Session
from loom.config import SORT_ORDERS, Config, SamplerPreset, SortOrder
from loom.engine.sampling import SamplerSettings
from loom.personas.labels import PersonaFilter
from loom.personas.scoring import PersonaScore
from loom.store.errors import LoomError
from loom.tui.display import ProbabilityScale
from loom.tui.keymap import APP_ACTIONS, bindings
from loom.tui.messages import GenerationJob, ModelJob
from loom.tui.themes import LOOM_VARIABLE_DEFAULTS, PERSONA_SLOTS, load_themes
from loom.tui.widgets.inspector import TokenInspector
from loom.tui.widgets.persona_panel import PersonaPanel
from loom.tui.widgets.reading_pane import PathText, ReadingPane
from loom.tui.widgets.status import Legend, StatusBar
from loom.tui.widgets.tree_pane import LabelStyle, LoomTree

P = ParamSpec("P")
R = TypeVar("R")
VISIT_SETTLE_S = 0.4
# The writing model's colour on tree chips, the legend and the inspector, by legend place: apart
# from the probability scale's hues and readable on dark and light themes.
MODEL_COLOURS = ("#5f9fff", "#ff9f1f", "#c77dff", "#3fbf7f", "#ff5f8f", "#3fbfbf")


def reports_errors(method: Callable[P, R]) -> Callable[P, R | None]:
    """Turn a store error in an action into a notice instead of a crash (the store has already
    left the loom unchanged: every write is one transaction)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(*args, **kwargs)
        except (LoomError, ValueError) as exc:
            app = args[0]
            assert isinstance(app, App)
            app.notify(str(exc), severity="error", title="Not done")
            return None

    return wrapper


class LoomAppBase(App[int]):
    CSS_PATH = "loom.tcss"
    TITLE = "loom"
    BINDINGS: ClassVar[list[BindingType]] = list(bindings(APP_ACTIONS))

    def __init__(self, session: Session, config: Config) -> None:
        super().__init__()
        self.session = session
        self.config = config
        self.current: int = session.root_id
        self.path_ids: list[int] = [self.current]
        self.sort_order: SortOrder = config.sort
        self.show_pruned = config.show_pruned
        self.preset: SamplerPreset = self._resolved_preset(config.active_preset())
        self.scale = ProbabilityScale.from_variables(LOOM_VARIABLE_DEFAULTS)
        self.theme_problems: list[str] = []
        # State the mixins share (declared here, never discovered with getattr):
        self.generation: GenerationJob | None = None  # the running generation, if any
        self._applied_theme: str | None = None
        self._prev_path_for_tree: list[int] = []  # the path the tree pane last showed
        self._visit_timer: Timer | None = None
        self.exporting = False  # an export or an import is running (one at a time)
        self.open_next: Path | None = None  # a loom to open once this app exits (an import)
        self.persona_filter: PersonaFilter | None = None
        self.labelling = False
        self._label_queue: list[int] = []  # new children to label once the running run ends
        self._has_personas: bool | None = None  # None: not looked up yet
        # Token evidence of nodes labelled in this session (labels in the file don't carry it).
        self.persona_evidence: dict[int, PersonaScore] = {}
        self.model_job: ModelJob | None = None  # a fork map, transitions or growth running
        self.growth: Growth | None = None  # guided growth under way (with its model_job)
        # The last fork map, and the token ids of the path it was made on.
        self.fork_map: ForkMap | None = None
        self.fork_ids: npt.NDArray[np.int32] | None = None
        # Reading aids (tui/viewing.py): the hoist (kept with the loom), the child filter, and
        # blind reading with the seed of its shuffle (fixed for the session).
        self.hoist: Hoist = session.hoist()
        self.child_filter: ChildFilter | None = None
        self.blind = False
        self.blind_seed = random.randrange(1 << 30)
        # What blind reading set aside: shading, the persona filter, the child filter.
        self._blind_saved: tuple[bool, PersonaFilter | None, ChildFilter | None] = (
            True,
            None,
            None,
        )
        # The model reading unscored text (S, or automatically for the path shown), if it runs.
        self.score_job: ModelJob | None = None
        # Nodes an automatic reading has been tried on this session (never tried twice: a node
        # that cannot be read, too long for the context, must not start a reading per move).
        self.score_tried: set[int] = set()
        # Why automatic reading stopped for this session (a model that cannot score), if it did.
        self.auto_score_failed: str | None = None
        # The loaded models and those that wrote the loom: their colours (see show_models).
        self.model_legend: list[LegendEntry] = []
        self._register_themes()

    # ----------------------------------------------------------------- set-up

    def _register_themes(self) -> None:
        themes, self.theme_problems = load_themes()
        for theme in themes:
            self.register_theme(theme)
        wanted = self.config.theme
        self.theme = wanted if wanted in self.available_themes else "loom-dark"
        if wanted not in self.available_themes:
            self.theme_problems.append(f"theme {wanted!r} not found; using loom-dark")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Notices quote user data (tags, paths, model errors): never read them as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(LOOM_VARIABLE_DEFAULTS)

    def _resolved_preset(self, preset: SamplerPreset) -> SamplerPreset:
        """A preset with n and max_tokens filled in from [generation] where it leaves them."""
        return SamplerPreset(
            preset.name,
            preset.temperature,
            preset.top_k,
            preset.top_p,
            preset.min_p,
            preset.max_tokens or self.config.max_tokens,
            preset.n or self.config.n,
        )

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Static(id="breadcrumb")
                yield LoomTree(id="tree")
            with Vertical(id="right"):
                yield ReadingPane(id="reading")
                yield Legend(id="legend")
                yield TokenInspector(id="inspector")
                yield PersonaPanel(id="persona-panel")
        yield ProgressBar(total=None, show_eta=False, id="model-progress")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def tree_pane(self) -> LoomTree:
        return self.query_one(LoomTree)

    @property
    def reading(self) -> ReadingPane:
        return self.query_one(ReadingPane)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    def on_mount(self) -> None:
        tree = self.tree_pane
        tree.children_of = self._children_for_tree
        tree.summary_of = self.session.summary
        self.reading.shading = self.config.shading
        self.theme_changed_signal.subscribe(self, lambda _theme: self._apply_theme())
        self._apply_theme(rebuild=False)
        session = self.session
        start = self._existing(session.place) or session.root_id
        self.rebuild_tree()
        self.go_to(start)
        tree.focus()
        self.status.show(
            loom_file=session.file.name if session.file else "(memory)",
            saved="read-only" if session.readonly else "saved",
            sort=self.sort_order,
            preset=self.preset.name,
        )
        for problem in self.theme_problems:
            self.notify(problem, severity="warning", title="Theme")
        self.after_mount()

    def after_mount(self) -> None:
        """For subclasses (Textual calls every class's on_mount: don't override it)."""

    def writable(self) -> bool:
        """True if the loom can be changed now; otherwise says why."""
        if self.session.readonly:
            self.notify("the loom is open read-only", severity="warning")
            return False
        if self.generation is not None:
            self.notify("wait for the generation to finish (esc cancels it)", severity="warning")
            return False
        if self.growth is not None and self.model_job is not None:
            self.notify(f"wait for the {self.model_job.what} to finish (esc stops it)",
                        severity="warning")  # fmt: skip
            return False
        return True

    def sampler_settings(self) -> SamplerSettings:
        """The settings the current preset gives a generation."""
        p = self.preset
        return SamplerSettings(
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            max_tokens=p.max_tokens or self.config.max_tokens,
        )

    def after_generation(self, ids: list[int]) -> None:
        """For subclasses: new children were written (persona labelling hooks in here)."""

    def refresh_path_marks(self, *, recheck: bool = False) -> None:
        """For subclasses: the collapse marks of the path shown (personas.py)."""

    def refresh_fork_marks(self) -> None:
        """For subclasses: the forking tokens of the path shown (census.py)."""

    def refresh_persona_panel(self) -> None:
        """For subclasses: the persona panel of the current node (personas.py)."""

    def _existing(self, node_id: int | None) -> int | None:
        return node_id if node_id is not None and self.session.exists(node_id) else None

    # ----------------------------------------------------------------- theme

    def _apply_theme(self, *, rebuild: bool = True) -> None:
        if rebuild and self.current_theme.name == self._applied_theme:
            return
        self._applied_theme = self.current_theme.name
        variables = {**LOOM_VARIABLE_DEFAULTS, **self.current_theme.variables}
        self.scale = ProbabilityScale.from_variables(variables)
        css = self.get_css_variables()
        self.reading.set_colours(
            self.scale,
            Color.parse(variables["node-current"]),
            Color.parse(variables["token-cursor"]),
        )
        self.tree_pane.label_style = LabelStyle(
            self.scale,
            self._persona_colours(variables),
            # $text-muted is "auto 60%" (relative to what's beneath): resolve it here.
            muted=Color.parse(css["foreground"]).blend(Color.parse(css["background"]), 0.4).hex,
            tag=Color.parse(css["accent"]).hex,
            background=Color.parse(css["surface"]),
            blind=self.blind,
        )
        self.tree_pane.label_style.models = self.model_chips()
        self.show_legend()
        if rebuild:
            self.rebuild_tree()
            self.go_to(self.current)

    def _persona_colours(self, variables: dict[str, str]) -> dict[str, str]:
        colours: dict[str, str] = {}
        for i, persona in enumerate(self.session.personas):
            slot = variables[f"persona-{i % PERSONA_SLOTS + 1}"]
            try:
                colours[persona.name] = Color.parse(persona.color).hex
            except Exception:  # a colour name the theme system doesn't know: use the slot
                colours[persona.name] = slot
        return colours

    # ----------------------------------------------------------------- the models

    def model_chips(self) -> dict[str, tuple[str, str]]:
        """Each model's (chip, colour) for the tree and the legend; empty while the loom and
        the session know one model only (nothing to tell apart)."""
        if len(self.model_legend) < 2:
            return {}
        names = [e.name for e in self.model_legend]
        chips = chip_names(names)
        return {
            e.name: (chips[e.name], MODEL_COLOURS[e.index % len(MODEL_COLOURS)])
            for e in self.model_legend
        }

    def show_models(self) -> None:
        """The loaded models changed (or the app opened): status bar, legend and tree chips."""
        # The second model's name is cut: the status line must keep room for the saved state.
        self.status.show(model=self.session.model_name,
                         second=short_name(self.session.second_name),
                         context_total=self.session.n_ctx or 0)  # fmt: skip
        self.model_legend = self.session.model_legend()
        self._show_model_colours()

    def note_model(self, name: str) -> None:
        """A generation by `name` was saved: add it to the legend if it is new (no store scan)."""
        if name and all(e.name != name for e in self.model_legend):
            self.model_legend.append(LegendEntry(name, len(self.model_legend), "", 0))
            self._show_model_colours()

    def _show_model_colours(self) -> None:
        chips = self.model_chips()
        style = self.tree_pane.label_style
        if style is not None and style.models != chips:
            style.models = chips
            self.rebuild_tree()
            self.go_to(self.current)
        roles = {e.name: e.role for e in self.model_legend}
        legend = self.query_one(Legend)
        legend.models = [(chip, colour, roles[name]) for name, (chip, colour) in chips.items()]
        legend.show(self.scale, self.reading.shading, self.reading_background())

    def writer_of(self, node_id: int) -> tuple[str, str] | None:
        """The model that wrote a node and its colour, None for human-written text."""
        model = self.session.summary(node_id).model
        if model is None:
            return None
        chip = self.model_chips().get(model)
        return model, chip[1] if chip else ""

    def persona_names(self) -> list[str]:
        return [p.name for p in self.session.personas]

    def persona_colours(self) -> dict[str, str]:
        """Each persona's colour in the current theme (by name)."""
        style = self.tree_pane.label_style
        return dict(style.personas) if style is not None else {}

    def show_legend(self) -> None:
        self.query_one(Legend).show(
            self.scale, self.reading.shading, self.reading_background(), blind=self.blind
        )

    def reading_background(self) -> Color:
        return Color.parse(self.get_css_variables().get("surface", "#202020"))

    def surface_colour(self) -> Color:
        return Color.parse(self.get_css_variables().get("panel", "#202020"))

    # ----------------------------------------------------------------- the tree pane

    def _children_for_tree(self, node_id: int) -> list[NodeSummary]:
        return self.session.children(node_id, self.view)

    @property
    def tree_top(self) -> int:
        """The node the tree pane shows as its root: the hoisted node, else the root."""
        return self.hoist.top(self.session.root_id)

    def rebuild_tree(self) -> None:
        """Start the tree pane afresh (after edits that can move or remove nodes anywhere: the
        Session has already forgotten what it cached of them)."""
        self._settle_hoist()
        self.tree_pane.reset_to(self.session.summary(self.tree_top), hoisted=self.hoist.active)
        self._prev_path_for_tree = []
        self._show_breadcrumb()

    def _settle_hoist(self) -> None:
        # A hoisted node removed (undo) or pruned: the hoist falls back to what still stands.
        if not self.hoist.active:
            return
        exists = {i for i in self.hoist.stack if self.session.exists(i)}
        pruned: set[int] = set()
        if not self.show_pruned:
            pruned = {h.id for h in self.session.headers(sorted(exists)) if h.pruned}
        if self.hoist.settle(exists, pruned):
            self.save_hoist()

    def save_hoist(self) -> None:
        with contextlib.suppress(LoomError):  # a view setting, never an error
            self.session.save_hoist(self.hoist)

    def _show_breadcrumb(self) -> None:
        crumb = self.query_one("#breadcrumb", Static)
        crumb.display = self.hoist.active
        if self.hoist.active:
            way = breadcrumb(self.session.path_headers(self.tree_top))
            crumb.update(Text(f"⤒ {way}  · Z or a click unhoists", no_wrap=True,
                              overflow="ellipsis"))  # fmt: skip
            crumb.tooltip = way
        self.status.show(hoist=f"#{self.tree_top}" if self.hoist.active else "")

    def load_model(self, model_path: Path | None, *, second: bool = False) -> None:
        raise NotImplementedError  # GenerationActions provides it

    def show_new_children(self, parent_id: int) -> None:
        """New children of `parent_id` were written: reload them into the tree, and the reading
        pane too if the parent is on the path shown."""
        self.tree_pane.load_children(
            self.tree_pane.node_for(parent_id) or self.tree_pane.root, force=True
        )
        self.refresh_node(parent_id)
        if parent_id in self.path_ids:
            self.go_to(self.current)

    def refresh_node(self, node_id: int) -> None:
        """Re-read one node's header (bookmark, tags, prune, children count) into the tree."""
        self.tree_pane.refresh_label(self.session.summary(node_id))

    # ----------------------------------------------------------------- navigation

    @property
    def view(self) -> View:
        """Which children the tree shows, in which order (blind reading: a fixed shuffle)."""
        f = self.child_filter
        return View(
            "shuffled" if self.blind else self.sort_order,
            self.show_pruned,
            seed=self.blind_seed,
            entropy=f is not None and f.needs_entropy,
        )

    def go_to(self, node_id: int, path_ids: list[int] | None = None) -> None:
        """Make `node_id` the current node: tree, reading pane and status follow.

        `path_ids` (root first, ending with `node_id`) saves a store query when the caller
        knows it: a step to a parent, child or sibling of the current node."""
        pieces = self.session.path_pieces(node_id, path_ids)
        ids = [piece[0] for piece in pieces]
        if not self.hoist.contains(ids):
            # A jump out of the hoisted subtree (a search result, an undo): widen the hoist.
            levels = self.hoist.widen_to(ids)
            self.save_hoist()
            self.rebuild_tree()
            self.notify(f"unhoisted {levels} level{'s' * (levels > 1)} to show #{node_id}",
                        timeout=3)  # fmt: skip
        previous = self._prev_path_for_tree
        self.current = node_id
        self.path_ids = ids
        self.session.nav.visited(self.path_ids)
        fresh = self.session.mark_read(self.path_ids)  # shown now: read (kept when it settles)
        self._remember_current_soon()
        shown = self.path_ids[self.path_ids.index(self.tree_top) :]
        self.tree_pane.show_path(shown, previous)
        self._prev_path_for_tree = shown
        for read_now in fresh:  # their unread marks go
            self.refresh_node(read_now)
        readers = {i: r for i in self.path_ids if (r := self.session.reader_of(i)) is not None}
        path = PathText.from_nodes(pieces, node_id, readers)
        self.reading.show(path)
        self.show_memory_status(len(path))

    def show_memory_status(self, path_tokens: int | None = None) -> None:
        """Status bar: the memory in effect at the current node and the context the model
        would read there (path, BOS and memory)."""
        if path_tokens is None:
            path_tokens = len(self.reading.path) if self.reading.path is not None else 0
        try:
            memory, memory_tokens = self.session.memory_in_effect(self.current)
        except LoomError as exc:  # a damaged memory: said, not fatal
            memory, memory_tokens = f"unreadable ({exc})", 0
        self.status.show(
            context_used=path_tokens + 1 + memory_tokens,
            context_total=self.session.n_ctx or 0,
            memory=memory,
        )

    def _remember_current_soon(self) -> None:
        # The store records each visit as an event (a write): record where the user settles,
        # not every node they pass through while holding a key down.
        if self._visit_timer is not None:
            self._visit_timer.stop()
        self._visit_timer = self.set_timer(VISIT_SETTLE_S, self.remember_current)

    def remember_current(self) -> None:
        """Store the current node as the loom's place (also on quit), and what was read."""
        with contextlib.suppress(LoomError):  # the place is a convenience, never an error
            self.session.set_place(self.current)

    def move(self, target: int | None, missing: str, path_ids: list[int] | None = None) -> None:
        if target is None:
            self.bell()
            self.notify(missing, timeout=2)
        else:
            self.go_to(target, path_ids)

    def action_parent(self) -> None:
        if self.current == self.tree_top and self.hoist.active:
            self.move(None, "the hoisted node is the top (Z unhoists)")
            return
        parent = self.session.nav.parent_of(self.current)
        self.move(parent, "the root has no parent", self.path_ids[:-1])

    def action_child(self) -> None:
        child = self.session.nav.child_of(self.current, self.view)
        self.move(child, "no children here", [*self.path_ids, child or 0])

    def action_sibling(self, step: int) -> None:
        top = self.current == self.tree_top
        sibling = None if top else self.session.nav.sibling_of(self.current, step, self.view)
        self.move(
            sibling,
            "no next sibling" if step > 0 else "no previous sibling",
            [*self.path_ids[:-1], sibling or 0],
        )

    def action_leaf(self, step: int) -> None:
        self.move(
            self.session.nav.leaf_of(self.current, step, self.view, top=self.tree_top),
            "no next leaf" if step > 0 else "no previous leaf",
        )

    def action_go_root(self) -> None:
        """The root, or the hoisted node inside a hoist (it is the tree's root then)."""
        self.go_to(self.tree_top)

    def action_bookmark_jump(self, step: int) -> None:
        top = self.tree_top
        if not self.hoist.active:
            self.move(self.session.nav.bookmark_after(self.current, step), "no bookmarks yet (b)")
            return
        inside = [
            b
            for b in self.session.bookmarks()
            if any(h.id == top for h in self.session.path_headers(b))
        ]
        self.move(
            self.session.nav.bookmark_after(self.current, step, inside),
            "no bookmarks under the hoisted node (Z unhoists)",
        )

    def on_tree_node_selected(self, event: LoomTree.NodeSelected[int]) -> None:
        if event.node.data is not None and event.node.data != self.current:
            self.go_to(event.node.data)

    # ----------------------------------------------------------------- view toggles

    def action_cycle_sort(self) -> None:
        self.sort_order = SORT_ORDERS[(SORT_ORDERS.index(self.sort_order) + 1) % len(SORT_ORDERS)]
        self.rebuild_tree()
        self.go_to(self.current)
        self.status.show(sort=self.sort_order)
        labels = {"created": "creation order", "mean": "mean token logprob",
                  "cumulative": "cumulative logprob",
                  "entropy": "mean token entropy, most certain first"}  # fmt: skip
        self.notify(f"siblings sorted by {labels[self.sort_order]}", timeout=2)

    def action_toggle_shading(self) -> None:
        self.reading.shading = not self.reading.shading
        self.show_legend()

    def action_toggle_pruned(self) -> None:
        self.show_pruned = not self.show_pruned
        self.rebuild_tree()
        self.go_to(self.current)
        self.notify("pruned branches shown" if self.show_pruned else "pruned branches hidden",
                    timeout=2)  # fmt: skip

    def action_inspect(self) -> None:
        self.reading.focus()

    def fork_outcomes_at(
        self, index: int
    ) -> tuple[ForkPoint, tuple[str, ...], dict[str, str]] | None:
        """For subclasses: what the last fork map found at path token `index`."""
        return None

    def on_reading_pane_cursor_moved(self, event: ReadingPane.CursorMoved) -> None:
        fork = None if event.index is None else self.fork_outcomes_at(event.index)
        path = self.reading.path
        writer = None
        if path is not None and event.index is not None and event.index < len(path):
            writer = self.writer_of(path.owners[event.index])
        self.query_one(TokenInspector).show_token(
            path, event.index, self.scale, self.surface_colour(), fork,
            blind=self.blind, writer=None if self.blind else writer,
        )  # fmt: skip
