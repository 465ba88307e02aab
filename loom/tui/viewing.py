"""Reading aids of the TUI: hoisting, the child filter, unread marks and blind reading.

Thin: the hoist stack, the filter and the walk to the next unread node are loom.app's (hoist.py,
reading.py); the base keeps the hoist in navigation (the tree's top, the breadcrumb, widening on
a jump out). Blind reading hides every probability, model name and persona cue: the widgets draw
without them, the actions that would show them are refused, and siblings come in a fixed shuffle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from textual import events
from textual.actions import ActionParseResult
from textual.dom import DOMNode
from textual.notifications import SeverityLevel

from loom.app.hoist import HoistError
from loom.app.navigation import NodeSummary
from loom.app.reading import (
    FILTER_SYNTAX,
    ChildFilter,
    FilterError,
    filter_children,
    next_unread,
    parse_filter,
)
from loom.tui.base import LoomAppBase
from loom.tui.screens.dialogs import PromptScreen
from loom.tui.widgets.persona_panel import PersonaPanel
from loom.tui.widgets.reading_pane import ReadingPane

# Actions that would show probabilities, model names or personas: refused in blind reading.
BLIND_REFUSED = frozenset(
    {
        "stats", "multiverse", "census", "fork_map", "transitions", "grow", "persona_panel",
        "persona_filter", "persona_filter_only", "persona_filter_hide", "prune_persona",
        "toggle_shading", "child_filter", "switch_model",
    }
)  # fmt: skip
BLIND_NOTE = "blind reading hides probabilities, models and personas: B leaves it"
HIDDEN = "(hidden)"  # what blind reading shows instead of a persona, a model or a percentage
PERCENT = re.compile(r"-?\d+(?:\.\d+)?\s?%")


class ViewActions(LoomAppBase):
    # ----------------------------------------------------------------- hoisting

    def action_hoist(self) -> None:
        """Show the current node's subtree as the whole tree (a view: not undoable)."""
        try:
            self.hoist.push(self.session.path_headers(self.current))
        except HoistError as exc:
            self.notify(str(exc), severity="warning", title="Not hoisted")
            return
        self._hoist_changed()
        self.notify(f"hoisted #{self.current} (Z unhoists, home comes back here)", timeout=3)

    def action_unhoist(self, all_levels: bool = False) -> None:
        was = self.hoist.pop(all_levels=all_levels)
        if was is None:
            self.notify("nothing is hoisted (z hoists the current node)", timeout=2)
            return
        self._hoist_changed()
        where = f"#{self.tree_top}" if self.hoist.active else "the root"
        self.notify(f"unhoisted #{was}: the tree starts at {where}", timeout=2)

    def on_click(self, event: events.Click) -> None:
        # The breadcrumb is the way back: a click on it unhoists one level.
        if event.widget is not None and event.widget.id == "breadcrumb":
            self.action_unhoist()

    def _hoist_changed(self) -> None:
        self.save_hoist()
        self.rebuild_tree()
        self.go_to(self.current)

    # ----------------------------------------------------------------- the child filter

    def _children_for_tree(self, node_id: int) -> list[NodeSummary]:
        return filter_children(super()._children_for_tree(node_id), self.child_filter)

    def action_child_filter(self) -> None:
        current = self.child_filter
        value = "" if current is None else f"{current.criterion} {current.op} {current.threshold:g}"

        def done(text: str | None) -> None:
            if text is None:
                return
            if text.strip().lower() in ("", "clear", "none", "off"):
                self.set_child_filter(None)
                return
            try:
                self.set_child_filter(parse_filter(text))
            except FilterError as exc:
                self.notify(str(exc), severity="error", title="Filter not set")

        self.push_screen(
            PromptScreen(
                "Filter children (empty clears)",
                value,
                placeholder="mean >= 20%",
                hint=f"{FILTER_SYNTAX} · enter accept · esc cancel",
            ),
            done,
        )

    def set_child_filter(self, new: ChildFilter | None) -> None:
        self.child_filter = new
        self.rebuild_tree()
        self.go_to(self.current)
        self.status.show(filter=new.describe() if new is not None else "")
        self.notify(
            f"children shown only where {new.describe()} (K, empty, clears)"
            if new is not None
            else "child filter cleared",
            timeout=3,
        )

    def action_child_filter_clear(self) -> None:
        self.set_child_filter(None)

    # ----------------------------------------------------------------- unread nodes

    def action_next_unread(self) -> None:
        """The next node never shown in the reading pane, depth first in the tree's order."""
        self.remember_current()  # leaving it: the node counts as read now, not only after a pause
        unread, with_unread = self.session.unread(include_pruned=self.show_pruned)
        top = self.tree_top
        target = next_unread(
            self.current, top, self.path_ids, with_unread, unread, self._children_for_tree
        )
        where = "under the hoisted node" if self.hoist.active else "in the tree"
        self.move(target, f"nothing unread {where}")

    # ----------------------------------------------------------------- blind reading

    def action_toggle_blind(self) -> None:
        self.set_blind(not self.blind)

    def set_blind(self, on: bool) -> None:
        if on == self.blind:
            return
        self.blind = on
        if on:
            # Filters would tell by what they hide: set aside until blind reading ends.
            self._blind_saved = (self.reading.shading, self.persona_filter, self.child_filter)
            self.reading.shading = False
            self.persona_filter, self.child_filter = None, None
            self.query_one(PersonaPanel).display = False
        else:
            self.reading.shading, self.persona_filter, self.child_filter = self._blind_saved
        label_style = self.tree_pane.label_style
        if label_style is not None:
            label_style.blind = on
        self.show_legend()
        persona_filter, child_filter = self.persona_filter, self.child_filter
        self.status.show(
            blind=on,
            sort="shuffled" if on else self.sort_order,
            filter="" if child_filter is None else child_filter.describe(),
            # the persona filter shows where the saved state does (personas.py)
            saved=f"filter: {persona_filter.describe()}" if persona_filter else "saved",
        )
        self.rebuild_tree()
        self.go_to(self.current)
        self.notify(
            "blind reading: no probabilities, models or personas; siblings shuffled (B ends it)"
            if on
            else "blind reading off",
            timeout=3,
        )

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """In blind reading a notice (a labelling's summary, "model ready: …") must not name a
        persona or the model, nor give a probability."""
        if self.blind:
            message = self.blind_redacted(message)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def blind_redacted(self, text: str) -> str:
        names = [*self.persona_names(), self.session.model_name]
        for name in sorted(filter(None, names), key=len, reverse=True):
            text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", HIDDEN, text)
        return PERCENT.sub(HIDDEN, text)

    def refresh_path_marks(self, *, recheck: bool = False) -> None:
        if self.blind:
            self.reading.set_marks({})
            return
        super().refresh_path_marks(recheck=recheck)

    def refresh_fork_marks(self) -> None:
        if self.blind:
            self.reading.set_fork_marks(frozenset())
            return
        super().refresh_fork_marks()

    def refresh_persona_panel(self) -> None:
        if not self.blind:
            super().refresh_persona_panel()

    async def run_action(
        self,
        action: str | ActionParseResult,
        default_namespace: DOMNode | None = None,
        namespaces: Mapping[str, DOMNode] | None = None,
    ) -> bool:
        name = action.split("(")[0] if isinstance(action, str) else action[1]
        if self.blind and name in BLIND_REFUSED and default_namespace in (None, self):
            self.notify(BLIND_NOTE, severity="warning", timeout=3)
            return True
        return await super().run_action(action, default_namespace, namespaces)

    def on_reading_pane_census_requested(self, message: ReadingPane.CensusRequested) -> None:
        if self.blind:
            message.prevent_default()
            self.notify(BLIND_NOTE, severity="warning", timeout=3)

    def on_reading_pane_branch_requested(self, message: ReadingPane.BranchRequested) -> None:
        if self.blind and message.rank is None:  # the picker lists probabilities
            message.prevent_default()
            self.notify(BLIND_NOTE + " (1-9 branch without the list)", severity="warning")
