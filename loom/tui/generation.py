"""Generation, counterfactual branching, the block multiverse and model loading.

Generation runs in a thread worker that holds the session's engine lock and honours
cancellation; tokens reach the UI as batches ~30 times a second (`TokensArrived`), shown live
in placeholder lines of the tree. When the engine returns (finished or cancelled), the branches
are written to the store in one transaction on the UI thread, and only then shown as done.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.widgets import ProgressBar
from textual.worker import get_current_worker

from loom.app.generation import GenerationResult, GenerationUnavailable, StreamedToken
from loom.app.multiverse import MultiverseNode
from loom.engine.errors import ContextOverflowError
from loom.store.model import Memory
from loom.tui.base import LoomAppBase, reports_errors
from loom.tui.display import percent, token_label
from loom.tui.messages import (
    GenerationDone,
    GenerationJob,
    ModelLoaded,
    ModelProgress,
    TokensArrived,
)
from loom.tui.screens.dialogs import ChoiceScreen
from loom.tui.screens.multiverse import MultiverseScreen
from loom.tui.widgets.reading_pane import ReadingPane
from loom.tui.widgets.tree_pane import pending_label


class GenerationActions(LoomAppBase):
    quit_after_generation = False  # quit was pressed mid-generation: save, then exit
    last_generated: list[int] = []  # noqa: RUF012 — replaced per instance, read by tests

    # ----------------------------------------------------------------- starting

    def action_generate(self) -> None:
        self.start_generation(self.current)

    def action_generate_second(self) -> None:
        self.start_generation(self.current, second=True)

    def action_swap_models(self) -> None:
        if self.generation is not None or self.model_job is not None or self.labelling:
            self.notify("wait for the model work to finish (esc stops it)", severity="warning")
            return
        if self.session.second is None:
            self.notify(f"{self.session.second_reason}: M loads one", severity="warning",
                        title="Can't swap")  # fmt: skip
            return
        self.session.swap_models()
        self.show_models()
        self.notify(f"primary: {self.session.model_name} · second: {self.session.second_name}",
                    timeout=3)  # fmt: skip

    def action_generate_siblings(self) -> None:
        parent = self.session.nav.parent_of(self.current)
        if parent is None:
            self.notify("the root has no siblings: generating its children", timeout=3)
            parent = self.current
        self.start_generation(parent)

    def start_generation(
        self, parent_id: int, forced: list[int] | None = None, *, second: bool = False
    ) -> bool:
        """Generate children of `parent_id` with the primary model or (`second`) the second."""
        blocker = self.session.generation_blocker()
        if second and blocker is None and self.session.second is None:
            blocker = f"{self.session.second_reason}: M loads a second model"
        if blocker:
            self.notify(blocker, severity="warning", title="Can't generate")
            return False
        if self.generation is not None:
            self.notify("already generating (esc cancels)", severity="warning")
            return False
        if self.model_job is not None:
            self.notify(f"wait for the {self.model_job.what} to finish (esc stops it)",
                        severity="warning")  # fmt: skip
            return False
        settings = self.sampler_settings()
        backend = self.session.second if second else self.session.backend
        try:  # the path as this model reads it (another model's text re-tokenized), with memory
            prompt = self.session.generation_prompt(
                parent_id, len(forced or []) + settings.max_tokens, backend=backend
            )
        except (ContextOverflowError, GenerationUnavailable) as exc:
            self.notify(str(exc), severity="error", title="Can't generate")
            return False
        prefix = prompt.ids
        n = int(self.preset.n or self.config.n)
        job = GenerationJob(
            parent_id, n, settings, forced, second, texts=[""] * n, memory=prompt.memory
        )
        job.pending = self.tree_pane.add_pending(parent_id, n)
        self.generation = job
        self.status.show(saved="generating… (esc cancels)")
        self._generate_worker(job, prefix)
        return True

    @work(thread=True, group="generate", exit_on_error=False)
    def _generate_worker(self, job: GenerationJob, prefix: list[int]) -> None:
        worker = get_current_worker()

        def on_batch(batch: list[StreamedToken]) -> None:
            if worker.is_cancelled:
                job.cancel.set()
            self.post_message(TokensArrived(job, batch))

        try:
            result = self.session.run_generation(
                prefix,
                job.n,
                job.settings,
                forced=job.forced,
                top_logprobs=self.config.top_logprobs,
                on_batch=on_batch,
                cancel=job.cancel,
                fresh=self.config.reproducible,
                second=job.second,
            )
        except Exception as exc:  # reported on the UI thread; the loom is untouched
            self.post_message(GenerationDone(job, None, exc))
        else:
            self.post_message(GenerationDone(job, result, None))

    # ----------------------------------------------------------------- streaming

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        job = message.job
        touched: set[int] = set()
        for token in message.batch:
            if 0 <= token.branch < len(job.texts):
                job.texts[token.branch] += token.text
                touched.add(token.branch)
        for branch in touched:
            if branch < len(job.pending):
                job.pending[branch].set_label(pending_label(job.texts[branch], branch))

    def action_cancel(self) -> None:
        if self.generation is not None:
            self.generation.cancel.set()
            self.status.show(saved="cancelling…")
        elif self.model_job is not None:
            self.model_job.cancel.set()
            self.status.show(job=f"stopping the {self.model_job.what}…")
        elif self.score_job is not None:  # the model reading unscored text (tui/scoring.py)
            self.score_job.cancel.set()
            self.status.show(job="stopping the reading…")
        elif isinstance(self.focused, ReadingPane):
            self.tree_pane.focus()

    # ----------------------------------------------------------------- finishing

    def on_generation_done(self, message: GenerationDone) -> None:
        self._finish_generation(message)
        if self.quit_after_generation:
            self.remember_current()
            self.exit(0)

    def _finish_generation(self, message: GenerationDone) -> None:
        job = message.job
        self.tree_pane.remove_pending(job.pending)
        self.generation = None
        if message.error is not None or message.result is None:
            self.status.show(saved="saved")
            self.notify(str(message.error), severity="error", title="Generation failed")
            return
        result = message.result
        ids = self._save_generation(job, result)
        if ids is None:
            return
        self.last_generated = ids
        self.note_model(result.model)
        self.show_new_children(job.parent_id)  # written and committed: now shown as done
        self.status.show(tokens_per_second=result.tokens_per_second, saved="saved")
        if result.error is not None:  # the server went away mid-generation
            self.notify(f"{result.error}; kept {len(ids)} partial branch(es)", severity="error")
        elif result.cancelled:
            self.notify(f"cancelled: kept {len(ids)} partial branch(es)", timeout=3)
        self.after_generation(ids)

    @reports_errors
    def _save_generation(self, job: GenerationJob, result: GenerationResult) -> list[int]:
        return self.session.save_branches(
            job.parent_id, result, job.settings, forced=job.forced, memory=job.memory
        )

    # ----------------------------------------------------------------- counterfactual

    def on_reading_pane_branch_requested(self, message: ReadingPane.BranchRequested) -> None:
        path = self.reading.path
        if path is None:
            return
        alternatives = path.tokens.top(message.index)
        if not alternatives:
            self.notify("no alternatives recorded for this token", severity="warning")
            return
        if message.rank is None:
            options = [
                (Text(f"{percent(math.exp(a.logprob))}  {token_label(a.text)}"), a.id)
                for a in alternatives
            ]
            self.push_screen(
                ChoiceScreen("Branch with which token?", options),
                lambda alt: None if alt is None else self.branch_from(message.index, alt),
            )
        elif message.rank <= len(alternatives):
            self.branch_from(message.index, alternatives[message.rank - 1].id)
        else:
            self.notify(f"only {len(alternatives)} alternatives here", severity="warning")

    @reports_errors
    def branch_from(self, path_index: int, alt_id: int) -> None:
        """Counterfactual branch: split the node at that token (via the store), then generate
        children of the head that start with the alternative token."""
        blocker = self.session.generation_blocker()
        if blocker:
            self.notify(blocker, severity="warning", title="Can't branch")
            return
        if self.generation is not None:
            self.notify("already generating (esc cancels)", severity="warning")
            return
        path = self.reading.path
        assert path is not None
        node_id = path.owners[path_index]
        start, _end = path.node_spans[node_id]
        # The alternative is a token of the model that wrote the node: that model continues.
        owner = self.session.tokens_owner(node_id)
        if owner is None:
            self.notify(
                f"node {node_id}'s tokens are another model's: load it (M) to branch from its "
                "alternatives",
                severity="warning",
                title="Can't branch",
            )
            return
        head = self.session.counterfactual_parent(node_id, path_index - start)
        self.rebuild_tree()
        self.go_to(head)
        self.tree_pane.focus()
        self.start_generation(head, forced=[alt_id], second=owner == "second")

    # ----------------------------------------------------------------- multiverse

    def action_multiverse(self) -> None:
        blocker = self.session.generation_blocker()
        if blocker:
            self.notify(blocker, severity="warning", title="Can't build a multiverse")
            return
        if self.generation is not None:
            self.notify("wait for the generation to finish (esc cancels it)")
            return
        parent = self.current
        try:
            prompt = self.session.generation_prompt(parent, self.config.multiverse_depth)
        except (ContextOverflowError, GenerationUnavailable) as exc:
            self.notify(str(exc), severity="error", title="Can't build a multiverse")
            return
        prefix = prompt.ids
        depth, width = self.config.multiverse_depth, self.config.multiverse_width

        def build(cancel: threading.Event, progress: Callable[[int, int], None]) -> MultiverseNode:
            return self.session.multiverse(prefix, depth, width, cancel=cancel, progress=progress)

        context = self.reading.path.text if self.reading.path is not None else ""
        screen = MultiverseScreen(build, context, depth, self.scale, self.surface_colour())

        def chosen(path: list[MultiverseNode] | None) -> None:
            if path and screen.root is not None:
                self._save_multiverse(parent, screen.root, path, prompt.memory)

        self.push_screen(screen, chosen)

    @reports_errors
    def _save_multiverse(
        self,
        parent: int,
        root: MultiverseNode,
        path: list[MultiverseNode],
        memory: list[Memory],
    ) -> None:
        node_id = self.session.save_multiverse_path(parent, root, path, memory)
        self.show_new_children(parent)
        self.go_to(node_id)
        self.notify(f"branch of {len(path)} token(s) created from the multiverse", timeout=3)

    # ----------------------------------------------------------------- model loading

    def load_model(self, model_path: Path | None, *, second: bool = False) -> None:
        """Load a model (None: the default) as the primary one, or (`second`) beside it."""
        bar = self.query_one("#model-progress", ProgressBar)
        bar.add_class("loading")
        if second:
            self.status.show(second="loading…")
        else:
            self.session.model_loading()
            self.status.show(model_note="loading…")
        self._load_worker(model_path, second)

    @work(thread=True, group="model", exit_on_error=False)
    def _load_worker(self, model_path: Path | None, second: bool = False) -> None:
        from loom.engine.engine import Engine
        from loom.engine.models import default_model_path

        def progress(done: int, total: int) -> None:
            self.post_message(ModelProgress(done, total))

        try:
            path = model_path or default_model_path(progress)
            if not second:  # the status bar's model note is the primary model's
                self.post_message(ModelProgress(0, 0))
            with self.session.engine_lock:
                backend = Engine.load(path, n_ctx=self.config.n_ctx)
        except Exception as exc:  # every failure becomes the reason generation is off
            why = str(exc) or type(exc).__name__
            self.post_message(ModelLoaded(None, why, model_path, second=second))
        else:
            self.post_message(ModelLoaded(backend, "", path, second=second))

    def on_model_progress(self, message: ModelProgress) -> None:
        bar = self.query_one("#model-progress", ProgressBar)
        done, total = message.done, message.total
        if total:
            bar.update(total=total, progress=done)
            self.status.show(model_note=f"assembling the default model {done * 100 // total}%")
        else:
            bar.update(total=None)
            self.status.show(model_note="loading the model…")

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.query_one("#model-progress", ProgressBar).remove_class("loading")
        if message.second:
            self._second_loaded(message)
            return
        if message.backend is None:
            self.session.set_backend(None, message.error)
            self.status.show(model="", model_note=f"none — {message.error}", context_total=0)
            self.notify(
                f"{message.error}\nThe loom is open read-only for generation: you can read, "
                "navigate, edit and export, but not generate.",
                severity="error",
                title="No model",
                timeout=12,
            )
            return
        self.session.set_backend(message.backend)
        self.status.show(model_note="")
        self.show_models()
        self.notify(f"model ready: {self.session.model_name}", timeout=3)

    def _second_loaded(self, message: ModelLoaded) -> None:
        """A second model loaded, or failed to: the primary one and the loom are untouched."""
        if message.backend is None:
            name = message.path.name if message.path is not None else "the default model"
            self.status.show(second=self.session.second_name)
            self.notify(
                f"{name}: {message.error}\nThe second model is not loaded; "
                f"{self.session.model_name or 'the primary model'} stays as it was.",
                severity="error",
                title="Second model not loaded",
                timeout=12,
            )
            return
        self.session.set_second_backend(message.backend)
        self.show_models()
        self.notify(f"second model ready: {self.session.second_name} (W generates with it)",
                    timeout=3)  # fmt: skip
