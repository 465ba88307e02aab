"""Tree edits, marks, search, undo/redo, statistics, sampler, theme and model switching.

Each action calls the store (one committed transaction) and only then updates the view, so the
screen never shows a change that isn't in the loom file.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.style import Style
from rich.text import Text

from loom.app.navigation import View
from loom.app.stats import SpanStats
from loom.config import ConfigError, save_preset
from loom.engine.errors import ContextOverflowError
from loom.text import one_line
from loom.tui.base import LoomAppBase, reports_errors
from loom.tui.display import percent, token_label
from loom.tui.screens.dialogs import ChoiceScreen, MessageScreen, PromptScreen, TextEditScreen
from loom.tui.screens.memory import MemoryEdit, MemoryScreen
from loom.tui.screens.sampler import SamplerChoice, SamplerScreen
from loom.tui.screens.search import SearchScreen

# The model picker's values besides paths (no path holds a NUL).
DROP = "\x00drop"  # drop the second model
SECOND = "\x00second\x00"  # + a path ("" the default model): load it as the second model


class EditActions(LoomAppBase):
    def land_on(self, candidates: list[int]) -> None:
        """Go to the first of `candidates` that still exists (after undo, prune …)."""
        for node_id in candidates:
            if self._existing(node_id) is not None:
                self.go_to(node_id)
                return
        self.go_to(self.session.root_id)

    # ----------------------------------------------------------------- writing

    def action_write_child(self) -> None:
        if not self.writable():
            return
        parent = self.current

        def done(text: str | None) -> None:
            if text:
                self._write_child(parent, text)

        self.push_screen(TextEditScreen("Write a child (your text)"), done)

    @reports_errors
    def _write_child(self, parent: int, text: str) -> None:
        node_id = self.session.add_human_child(parent, text)
        self.tree_pane.load_children(
            self.tree_pane.node_for(parent) or self.tree_pane.root, force=True
        )
        self.refresh_node(parent)
        self.go_to(node_id)

    def action_edit_node(self) -> None:
        if not self.writable():
            return
        node_id = self.current
        original = self.session.node(node_id).text

        def done(text: str | None) -> None:
            if text is not None and text != original:
                self._edit(node_id, text)

        self.push_screen(TextEditScreen(f"Edit node #{node_id}", original), done)

    @reports_errors
    def _edit(self, node_id: int, text: str) -> None:
        self.session.edit(node_id, text)
        self.refresh_node(node_id)
        self.go_to(node_id)

    @reports_errors
    def action_split(self) -> None:
        if not self.writable():
            return
        path = self.reading.path
        cursor = self.reading.cursor
        if path is None or cursor is None:
            self.notify("put the token cursor (i) where the split goes", severity="warning")
            return
        node_id = path.owners[cursor]
        start, end = path.node_spans[node_id]
        at = cursor - start
        if at <= 0:
            self.notify("the cursor is on the node's first token: nothing to split off",
                        severity="warning")  # fmt: skip
            return
        tail = self.session.split(node_id, at)
        self.rebuild_tree()
        self.go_to(int(tail) if node_id == self.current else self.current)
        self.tree_pane.focus()
        self.notify(f"split #{node_id}: the last {end - cursor} tokens are now #{tail}", timeout=3)

    @reports_errors
    def action_merge(self) -> None:
        if not self.writable():
            return
        node_id = self.current
        parent = self.session.nav.parent_of(node_id)
        if parent is None:
            self.notify("the root has no parent to merge into", severity="warning")
            return
        self.session.merge_into_parent(node_id)
        self.rebuild_tree()
        self.go_to(parent)
        self.notify(f"merged #{node_id} into #{parent}", timeout=3)

    # ----------------------------------------------------------------- prune

    @reports_errors
    def action_prune(self) -> None:
        if not self.writable():
            return
        node_id = self.current
        parent = self.session.nav.parent_of(node_id)
        if parent is None:
            self.notify("the root can't be pruned", severity="warning")
            return
        self.session.prune(node_id)
        self.rebuild_tree()
        self.go_to(node_id if self.show_pruned else parent)
        self.notify(f"pruned #{node_id} (u undoes, P shows pruned branches)", timeout=3)

    @reports_errors
    def action_unprune(self) -> None:
        if not self.writable():
            return
        if self.session.summary(self.current).pruned:
            self._unprune(self.current)
            return
        everything = View(self.sort_order, include_pruned=True)
        pruned = [c for c in self.session.children(self.current, everything) if c.pruned]
        if not pruned:
            self.notify("nothing pruned here", severity="warning")
            return
        options = [(Text(f"#{c.id}  {one_line(c.preview, 70)}"), c.id) for c in pruned]
        self.push_screen(
            ChoiceScreen("Unprune which child?", options),
            lambda node_id: None if node_id is None else self._unprune(node_id),
        )

    @reports_errors
    def _unprune(self, node_id: int) -> None:
        self.session.unprune(node_id)
        self.rebuild_tree()
        self.go_to(node_id)
        self.notify(f"unpruned #{node_id}", timeout=2)

    # ----------------------------------------------------------------- marks

    @reports_errors
    def action_bookmark(self) -> None:
        if self.session.readonly:
            self.notify("the loom is open read-only", severity="warning")
            return
        on = not self.session.summary(self.current).bookmarked
        self.session.set_bookmark(self.current, on)
        self.refresh_node(self.current)
        self.notify("bookmarked" if on else "bookmark removed", timeout=2)

    def action_tag(self) -> None:
        if self.session.readonly:
            self.notify("the loom is open read-only", severity="warning")
            return
        node_id = self.current
        tags = " ".join(f"#{t}" for t in self.session.summary(node_id).tags)

        def done(value: str | None) -> None:
            if value and value.strip():
                self._tag(node_id, value.strip())

        self.push_screen(
            PromptScreen("Tag", placeholder="tag (or -tag to remove)",
                         hint=f"current tags: {tags or 'none'} · enter · esc"),
            done,
        )  # fmt: skip

    @reports_errors
    def _tag(self, node_id: int, value: str) -> None:
        if value.startswith("-"):
            self.session.remove_tag(node_id, value[1:].lstrip("#"))
        else:
            self.session.add_tag(node_id, value.lstrip("#"))
        self.refresh_node(node_id)

    # ----------------------------------------------------------------- find

    def action_search(self) -> None:
        def done(node_id: int | None) -> None:
            if node_id is not None:
                self.go_to(node_id)

        self.push_screen(SearchScreen(lambda q: self.session.search(q, limit=100)), done)

    # ----------------------------------------------------------------- undo

    @reports_errors
    def action_undo(self) -> None:
        self._undo_redo(redo=False)

    @reports_errors
    def action_redo(self) -> None:
        self._undo_redo(redo=True)

    def _undo_redo(self, *, redo: bool) -> None:
        if not self.writable():
            return
        event = self.session.redo() if redo else self.session.undo()
        if event is None:
            self.notify(f"nothing to {'redo' if redo else 'undo'}", timeout=2)
            return
        self.rebuild_tree()
        self.land_on([*reversed(self.path_ids)])
        self.notify(f"{'redid' if redo else 'undid'}: {event.kind}", timeout=2)

    # ----------------------------------------------------------------- hidden context

    def action_memory(self) -> None:
        if not self.writable():
            return
        node_id = self.current
        in_effect, _tokens = self.session.memory_in_effect(node_id)
        inherited = self.session.inherited_memory(node_id)
        screen = MemoryScreen(
            node_id, self.session.memory(node_id), self.session.memory(None), in_effect, inherited
        )
        self.push_screen(screen, self._memory_chosen)

    @reports_errors
    def _memory_chosen(self, edit: MemoryEdit | None) -> None:
        if edit is None:
            return
        where = "the loom" if edit.node is None else f"node #{edit.node}"
        if edit.memory is not None:
            try:  # a memory that cannot fit with a generation is refused, saying by how much
                self.session.check_memory(edit.memory, self.sampler_settings().max_tokens)
            except ContextOverflowError as exc:
                self.notify(str(exc), severity="error", title="Memory not kept")
                return
        self.session.set_memory(edit.node, edit.memory)
        self.show_memory_status()
        if edit.memory is None:
            self.notify(f"memory of {where} cleared", timeout=3)
        else:
            self.notify(f"memory of {where} kept: {edit.memory.placement}", timeout=3)

    # ----------------------------------------------------------------- statistics

    def action_stats(self) -> None:
        stats = self.session.branch_stats(self.current)
        text = Text()
        for title, span in (("this node", stats.node), ("the path from the root", stats.path)):
            text.append(f"{title}\n", Style(bold=True, underline=True))
            text.append_text(stats_text(span))
            text.append("\n")
        self.push_screen(MessageScreen(f"Branch statistics — node #{self.current}", text))

    # ----------------------------------------------------------------- sampler

    def action_sampler(self) -> None:
        def done(choice: SamplerChoice | None) -> None:
            if choice is not None:
                self._apply_sampler(choice)

        self.push_screen(SamplerScreen(self.config.presets, self.preset), done)

    def _apply_sampler(self, choice: SamplerChoice) -> None:
        self.preset = choice.preset
        self.config.presets[choice.preset.name] = choice.preset
        self.status.show(preset=choice.preset.name)
        if not choice.save:
            self.notify(f"sampler: {choice.preset.name}", timeout=2)
            return
        try:
            path = save_preset(choice.preset)
        except (OSError, ConfigError) as exc:
            self.notify(f"preset not saved: {exc}", severity="error")
        else:
            self.notify(f"preset {choice.preset.name!r} saved in {path}", timeout=4)

    # ----------------------------------------------------------------- theme and model

    def action_pick_theme(self) -> None:
        names = sorted(self.available_themes)
        loom_first = [n for n in names if n.startswith("loom-")] + [
            n for n in names if not n.startswith("loom-")
        ]
        options = [(Text(("● " if n == self.theme else "  ") + n), n) for n in loom_first]

        def done(name: str | None) -> None:
            if name:
                self.theme = name

        current = loom_first.index(self.theme) if self.theme in loom_first else 0
        self.push_screen(ChoiceScreen("Theme", options, initial=current), done)

    def action_switch_model(self) -> None:
        from loom.engine.models import discover_models
        from loom.paths import model_dirs

        if self.generation is not None:
            self.notify("wait for the generation to finish (esc cancels it)", severity="warning")
            return
        found = []
        folders = [Path(self.config.models_dir)] if self.config.models_dir else model_dirs()
        with_default = True  # the default model and the packaged ones once, not per folder
        for folder in folders:
            try:
                found.extend(discover_models(folder, include_default=with_default))
                with_default = False
            except Exception as exc:  # an unreadable folder must not hide the others
                self.notify(f"{folder}: {exc}", severity="warning")
        # Values are path strings; "" is the default model (None is reserved for "cancelled").
        options: list[tuple[Text, str]] = [(Text("default model (Gemma 3 270M base)"), "")]
        for info in found:
            label = Text(f"{info.name}  ")
            label.append(f"{info.size_bytes / 1e6:.0f} MB · {info.looks_like}", Style(dim=True))
            options.append((label, str(info.path)))
        # The same models again, to load beside the primary one as the second model (W).
        if self.session.backend is not None:
            for label, value in list(options):
                beside = Text("2nd model: ", Style(bold=True))
                beside.append_text(label)
                options.append((beside, SECOND + value))
        if self.session.second is not None:
            options.append((Text(f"drop the 2nd model ({self.session.second_name})"), DROP))

        def done(choice: str | None) -> None:
            if choice == DROP:
                self.session.set_second_backend(None)
                self.show_models()
                self.notify("second model dropped", timeout=3)
            elif choice is not None and choice.startswith(SECOND):
                path = choice.removeprefix(SECOND)
                self.load_model(Path(path) if path else None, second=True)
            elif choice is not None:
                self.load_model(Path(choice) if choice else None)

        title = "Switch model (or load a 2nd one beside it)"
        self.push_screen(ChoiceScreen[str](title, options), done)


def stats_text(span: SpanStats) -> Text:
    out = Text()
    if not span.n_scored:
        out.append(f"  {span.n_tokens} tokens, none with probabilities (hand-written)\n")
        return out
    out.append(f"  tokens              {span.n_tokens} ({span.n_scored} model-written)\n")
    out.append(f"  cumulative logprob  {span.cum_logprob:.3f}\n")
    assert span.mean_logprob is not None
    out.append(f"  mean logprob        {span.mean_logprob:.3f}  "
               f"(mean p {percent(math.exp(span.mean_logprob)).strip()}, "
               f"perplexity {span.perplexity:.2f})\n")  # fmt: skip
    if span.lowest is not None:
        low = span.lowest
        out.append(f"  least likely token  {token_label(low.text)} "
                   f"p {percent(math.exp(low.logprob)).strip()} "
                   f"(logprob {low.logprob:.3f}, node #{low.node_id})\n")  # fmt: skip
    entropy = "—" if span.mean_entropy is None else f"{span.mean_entropy:.3f} nats"
    out.append(f"  mean entropy        {entropy}\n")
    return out
