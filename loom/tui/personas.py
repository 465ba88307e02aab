"""Persona actions of the TUI: the persona panel, labelling (after generation and on demand),
filters over the tree, pruning by persona, hand labels and loading a persona set.

Thin: the arithmetic and the store writes are loom.personas' (label_nodes,
prune_siblings_voicing, filter_nodes, stored_trajectory); this module only wires keys to them.
Labelling runs in a thread worker holding the session's engine lock, like generation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import work

from loom.app.navigation import NodeSummary
from loom.personas.actions import LabelRun
from loom.personas.labels import PersonaFilter, filter_nodes
from loom.personas.sets import PersonaSet, PersonaSetError, load_persona_set
from loom.tui.base import LoomAppBase, reports_errors
from loom.tui.messages import LabelsDone
from loom.tui.screens.dialogs import ChoiceScreen, PromptScreen
from loom.tui.widgets.persona_panel import PanelData, PersonaPanel
from loom.tui.widgets.tree_pane import COLLAPSE_GLYPH, MODE_COLLAPSE_GLYPH

CLEAR = "\x00clear"  # the picker's "clear" choice (no persona can be named this)


class PersonaActions(LoomAppBase):
    @property
    def persona_threshold(self) -> float:
        return self.config.persona_threshold

    @property
    def persona_panel(self) -> PersonaPanel:
        return self.query_one(PersonaPanel)

    # ----------------------------------------------------------------- the panel

    def action_persona_panel(self) -> None:
        panel = self.persona_panel
        panel.display = not panel.display
        if panel.display:
            self.refresh_persona_panel()

    def go_to(self, node_id: int, path_ids: list[int] | None = None) -> None:
        super().go_to(node_id, path_ids)
        self.refresh_path_marks()
        self.refresh_persona_panel()

    def refresh_path_marks(self, *, recheck: bool = False) -> None:
        """Collapse glyphs at the node boundaries of the reading pane (read only when the
        loom has personas: a loom without labels pays nothing per move)."""
        if self._has_personas is None or recheck:
            self._has_personas = bool(self.session.personas)
        if not self._has_personas:
            return
        marks = {}
        for h in self.session.headers(self.path_ids):
            label = h.persona
            if label is not None and (label.collapse or label.mode_collapse):
                marks[h.id] = (COLLAPSE_GLYPH if label.collapse else "") + (
                    MODE_COLLAPSE_GLYPH if label.mode_collapse else ""
                )
        self.reading.set_marks(marks)

    def refresh_persona_panel(self) -> None:
        panel = self.persona_panel
        if not panel.display:
            return
        header = self.session.header(self.current)
        names = self.persona_names()
        colours = self.persona_colours()
        trajectory = self.session.trajectory(self.current) if names else None
        evidence = self.persona_evidence.get(self.current)
        chips = self.model_chips()
        comparison = None
        if names and chips:  # several models: how do their branches split?
            comparison = self.session.persona_comparison(self.current)
            if not any(s.total for s in comparison.splits) and header.parent is not None:
                comparison = self.session.persona_comparison(header.parent)  # a leaf: its siblings
        panel.show_data(
            PanelData(header, names, colours, trajectory,
                      evidence.evidence if evidence else [], comparison, chips)
        )  # fmt: skip

    # ----------------------------------------------------------------- the tree filter

    def _children_for_tree(self, node_id: int) -> list[NodeSummary]:
        kids = super()._children_for_tree(node_id)
        f = self.persona_filter
        if f is None or not kids:
            return kids
        headers = self.session.headers([k.id for k in kids])
        # Unlabelled nodes are not judged: the filter applies to what has been labelled.
        judged = [h for h in headers if h.persona is not None or h.manual_persona is not None]
        kept = {h.id for h in filter_nodes(judged, f.persona, f.threshold, f.mode)}
        judged_ids = {h.id for h in judged}
        return [k for k in kids if k.id not in judged_ids or k.id in kept]

    def set_persona_filter(self, new: PersonaFilter | None) -> None:
        self.persona_filter = new
        self.rebuild_tree()
        self.go_to(self.current)
        self.status.show(saved=f"filter: {new.describe()}" if new else "saved")
        self.notify(f"persona filter: {new.describe()}" if new else "persona filter cleared",
                    timeout=2)  # fmt: skip

    def action_persona_filter(self) -> None:
        names = self.persona_names()
        if not names:
            self.notify("this loom has no persona set (ctrl+l loads one)", severity="warning")
            return
        t = self.persona_threshold
        options: list[tuple[Text, PersonaFilter | str]] = []
        for n in names:
            options.append((Text(f"show only {n}"), PersonaFilter(n, "only", t)))
            options.append((Text(f"hide {n}"), PersonaFilter(n, "hide", t)))
        options.append((Text("clear the persona filter"), CLEAR))

        def chosen(choice: PersonaFilter | str | None) -> None:
            if choice is not None:  # None: the dialog was cancelled
                self.set_persona_filter(choice if isinstance(choice, PersonaFilter) else None)

        self.push_screen(
            ChoiceScreen(f"Filter the tree by persona (confidence ≥ {t:.0%})", options), chosen
        )

    def action_persona_filter_only(self, persona: str) -> None:
        self.set_persona_filter(PersonaFilter(persona, "only", self.persona_threshold))

    def action_persona_filter_hide(self, persona: str) -> None:
        self.set_persona_filter(PersonaFilter(persona, "hide", self.persona_threshold))

    def action_persona_filter_clear(self) -> None:
        self.set_persona_filter(None)

    # ----------------------------------------------------------------- pruning by persona

    def _pick_persona(
        self, title: str, then: Callable[[str | None], None], *, with_clear: bool = False
    ) -> None:
        names = self.persona_names()
        if not names:
            self.notify("this loom has no persona set (ctrl+l loads one)", severity="warning")
            return
        colours = self.persona_colours()
        options: list[tuple[Text, str]] = [
            (Text(n, Style(color=colours.get(n), bold=True)), n) for n in names
        ]
        if with_clear:
            options.append((Text("clear the hand label"), CLEAR))
        self.push_screen(ChoiceScreen(title, options), then)

    def action_prune_persona(self) -> None:
        if not self.writable():
            return
        if self.session.nav.parent_of(self.current) is None:
            self.notify("the root has no siblings", severity="warning")
            return

        def chosen(persona: str | None) -> None:
            if persona is not None:
                self.prune_voicing(self.current, persona)

        self._pick_persona("Prune the siblings voicing which persona?", chosen)

    @reports_errors
    def prune_voicing(self, node_id: int, persona: str) -> list[int]:
        doomed = self.session.prune_siblings_voicing(node_id, persona, self.persona_threshold)
        if not doomed:
            self.notify(f"no sibling voices {persona}", timeout=2)
            return []
        self.rebuild_tree()
        self.go_to(node_id)
        self.notify(f"pruned {len(doomed)} sibling(s) voicing {persona} (u undoes)", timeout=3)
        return doomed

    # ----------------------------------------------------------------- hand labels

    def action_manual_persona(self) -> None:
        if not self.writable():
            return
        node_id = self.current

        def chosen(persona: str | None) -> None:
            if persona is not None:
                self.set_manual(node_id, None if persona == CLEAR else persona)

        self._pick_persona(f"Label node #{node_id} by hand", chosen, with_clear=True)

    @reports_errors
    def set_manual(self, node_id: int, persona: str | None) -> None:
        self.session.set_manual_persona(node_id, persona)
        self.refresh_node(node_id)
        self.refresh_persona_panel()
        self.notify(f"#{node_id} labelled {persona} by hand" if persona
                    else f"hand label of #{node_id} cleared", timeout=2)  # fmt: skip

    # ----------------------------------------------------------------- loading a set

    def action_load_personas(self) -> None:
        if not self.writable():
            return

        def done(path: str | None) -> None:
            if path:
                self.load_personas(Path(path).expanduser())

        self.push_screen(
            PromptScreen("Load a persona set", placeholder="sessions/croissant.toml",
                         hint="a TOML file of [[persona]] tables · enter load · esc cancel"),
            done,
        )  # fmt: skip

    @reports_errors
    def load_personas(self, path: Path) -> None:
        try:
            persona_set = load_persona_set(path)
        except (PersonaSetError, OSError) as exc:
            self.notify(str(exc), severity="error", title="Not loaded")
            return
        self.session.set_personas(persona_set.personas)
        self._has_personas = True
        self._applied_theme = ""  # persona colours come with the theme: recompute them
        self._apply_theme()
        self.refresh_persona_panel()
        self.notify(f"persona set: {', '.join(persona_set.names)} (r labels nodes)", timeout=4)

    # ----------------------------------------------------------------- labelling

    def action_label_personas(self) -> None:
        if not self.persona_names():
            self.notify("this loom has no persona set (ctrl+l loads one)", severity="warning")
            return
        options = [
            (Text("this node and its subtree"), "subtree"),
            (Text("this node and its siblings"), "siblings"),
        ]
        self.push_screen(ChoiceScreen("Label with personas", options), self._label_scope)

    def _label_scope(self, scope: str | None) -> None:
        if scope is None:
            return
        if scope == "siblings":
            ids = [self.current, *self.session.sibling_ids(self.current)]
        else:
            ids = self.session.subtree_ids(self.current)
        ids = [i for i in ids if i != self.session.root_id]
        if not ids:
            self.notify("nothing to label (the root is the setting, not evidence)")
            return
        self.start_labelling(ids)

    def start_labelling(self, node_ids: list[int], *, quiet: bool = False) -> bool:
        """Label `node_ids` in a worker; False (with a notice unless quiet) if it can't run."""
        persona_set = self.session.persona_set
        reason = None
        if persona_set is None:
            reason = "this loom has no persona set"
        elif self.session.backend is None:
            reason = f"labelling needs a model: {self.session.no_model_reason}"
        elif self.session.readonly:
            reason = "the loom is open read-only"
        elif self.labelling:
            if quiet:  # new children while a run is going: label them next
                self._label_queue.extend(node_ids)
                return True
            reason = "already labelling"
        if reason is not None:
            if not quiet:
                self.notify(reason, severity="warning", title="Can't label")
            return False
        self.labelling = True
        self.status.show(saved=f"labelling {len(node_ids)} node(s)…")
        self._label_worker(persona_set, node_ids, quiet)
        return True

    @work(thread=True, group="label", exit_on_error=False)
    def _label_worker(self, persona_set: PersonaSet, node_ids: list[int], quiet: bool) -> None:
        # Scores only: the labels are written by the UI thread when LabelsDone arrives.
        try:
            run = self.session.plan_labels(persona_set, node_ids, self.persona_threshold)
        except Exception as exc:  # reported on the UI thread
            self.post_message(LabelsDone(None, exc, quiet))
        else:
            self.post_message(LabelsDone(run, None, quiet))

    def on_labels_done(self, message: LabelsDone) -> None:
        self.labelling = False
        self.status.show(saved="saved")
        queued, self._label_queue = self._label_queue, []
        queued = [i for i in queued if self._existing(i) is not None]
        if message.error is not None or message.run is None:
            self.notify(str(message.error), severity="error", title="Labelling failed")
        else:
            self._labelled(message.run, message.quiet)
        if queued:
            self.start_labelling(queued, quiet=True)

    @reports_errors
    def _labelled(self, run: LabelRun, quiet: bool) -> None:
        run.labels = {i: label for i, label in run.labels.items() if self.session.exists(i)}
        self.session.write_labels(run)  # written, committed: now they may be shown
        self.persona_evidence.update(run.scores)
        for node_id in run.labels:
            self.refresh_node(node_id)
        self._has_personas = True
        if self.persona_filter is not None:
            self.rebuild_tree()
            self.go_to(self.current)
        else:
            self.refresh_path_marks()
            self.refresh_persona_panel()
        if not quiet:
            self.notify(run.summary(), timeout=5)

    def after_generation(self, ids: list[int]) -> None:
        """New children get labelled when the loom has a persona set (quietly: a model-less
        or busy app simply leaves them for r)."""
        if ids and self.config.persona_auto_label and self.session.personas:
            self.start_labelling(ids, quiet=True)
