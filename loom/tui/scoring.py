"""Reading unscored text in the TUI: `S` on demand, and automatically for the path shown.

Thin: what to read, the reading and the store write are loom.app.scoring's (through the
Session). The model reads in a thread worker holding the engine lock; the worker posts
`ScoresDone` and the UI thread writes the readings, then shows them (shaded, in italics).
"""

from __future__ import annotations

from textual import work

from loom.app.scoring import ScoreRun
from loom.tui.base import LoomAppBase, reports_errors
from loom.tui.messages import ModelJob, ModelLoaded, ScoreProgress, ScoresDone


class ScoringActions(LoomAppBase):
    def action_score(self) -> None:
        """The path to the current node and everything under it."""
        ids = [*self.path_ids, *self.session.subtree_ids(self.current)[1:]]
        self.start_scoring(ids, quiet=False)

    def go_to(self, node_id: int, path_ids: list[int] | None = None) -> None:
        super().go_to(node_id, path_ids)
        self.score_path_if_unread()

    def on_model_loaded(self, _message: ModelLoaded) -> None:
        # GenerationActions' handler (earlier in the MRO) has installed the model by now; the
        # path shown is read again with it (which reading a node shows depends on the model).
        self.auto_score_failed = None
        self.score_tried.clear()
        self.go_to(self.current)

    def score_path_if_unread(self) -> None:
        """Read the path shown, if the setting allows and it holds text the loaded model has not
        read (each node is tried once a session: one that cannot be read is not retried)."""
        if (
            not self.config.auto_score
            or self.auto_score_failed is not None
            or self.session.backend is None
            or self.session.readonly
            or self.score_job is not None
        ):
            return
        unread = [i for i in self.session.unscored(self.path_ids) if i not in self.score_tried]
        if unread:
            self.start_scoring(list(self.path_ids), quiet=True)

    def start_scoring(self, node_ids: list[int], *, quiet: bool) -> bool:
        """Read `node_ids` in a worker; False (with a notice unless quiet) if it cannot run."""
        reason = None
        if self.session.backend is None:
            reason = f"scoring needs a model: {self.session.no_model_reason}"
        elif self.session.readonly:
            reason = "the loom is open read-only"
        elif self.score_job is not None:
            reason = "already reading"
        if reason is not None:
            if not quiet:
                self.notify(reason, severity="warning", title="Can't score")
            return False
        self.score_tried.update(node_ids)
        self.score_job = ModelJob("reading")
        self.status.show(job="reading…")
        self._score_worker(self.score_job, node_ids, quiet)
        return True

    @work(thread=True, group="score", exit_on_error=False)
    def _score_worker(self, job: ModelJob, node_ids: list[int], quiet: bool) -> None:
        # Reads and scores only: the UI thread writes the readings when ScoresDone arrives.
        def progress(done: int, total: int) -> None:
            self.post_message(ScoreProgress(done, total))

        try:
            plan = self.session.plan_scoring(node_ids, top_logprobs=self.config.top_logprobs)
            if not plan.n_nodes and not plan.too_long:
                run = ScoreRun(plan.model, plan.model_sha256, [], 0.0)
            else:
                run = self.session.run_scoring(
                    plan,
                    cancel=job.cancel,
                    progress=progress,
                )
        except Exception as exc:  # reported on the UI thread
            self.post_message(ScoresDone(None, exc, quiet))
        else:
            self.post_message(ScoresDone(run, None, quiet))

    def on_score_progress(self, message: ScoreProgress) -> None:
        if self.score_job is not None:
            self.status.show(job=f"reading {message.done}/{message.total} tokens")

    def on_scores_done(self, message: ScoresDone) -> None:
        self.score_job = None
        self.status.show(job="")
        if message.error is not None or message.run is None:
            if message.quiet:  # said once: the path of every node visited would fail alike
                self.auto_score_failed = str(message.error)
            self.notify(str(message.error), severity="error", title="Scoring failed")
            return
        self._save_scores(message.run, message.quiet)

    @reports_errors
    def _save_scores(self, run: ScoreRun, quiet: bool) -> None:
        # The loom may have changed while the model read: keep what still spells its node.
        run.readings = [
            (i, tokens)
            for i, tokens in run.readings
            if self.session.exists(i) and self.session.node(i).text == tokens.text
        ]
        self.session.save_scores(run)  # written, committed: now they may be shown
        if any(i in self.path_ids for i, _t in run.readings):
            self.go_to(self.current)
        if run.too_long:
            self.notify(
                f"node(s) {', '.join(map(str, run.too_long[:5]))} are longer than the model's "
                "context: not read",
                severity="warning",
            )
        if not quiet or run.cancelled:
            done = "stopped: " if run.cancelled else ""
            self.notify(
                f"{done}read {len(run.readings)} node(s), {run.n_tokens} tokens, "
                f"in {run.seconds:.1f} s",
                timeout=4,
            )
