"""The census, the fork map, the transition table and guided growth in the TUI.

Thin: the rollouts, the statistics and the growth policies are loom.app's (census.py, forks.py,
growth.py). Model work runs in thread workers; results come back as messages and are written on
the UI thread before they are shown. One model job runs at a time (`model_job`); esc stops it and
keeps what was done. Guided growth is a loop the UI drives: plan a step (cheap, UI thread),
compute it in a worker, save it as one automatic undo step, show it, plan the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from rich.text import Text
from textual import work

from loom.app.census import CensusResult, CensusSettings, transition_table
from loom.app.forks import ForkMap, ForkPoint
from loom.app.growth import Growth, GrowthError, GrowthPlan, GrowthPolicy, GrowthStep
from loom.tui.base import LoomAppBase, reports_errors
from loom.tui.messages import (
    ForkMapDone,
    GrowthStepDone,
    JobProgress,
    ModelJob,
    TransitionsDone,
)
from loom.tui.screens.census import CensusScreen, transition_text
from loom.tui.screens.dialogs import ChoiceScreen, MessageScreen, PromptScreen
from loom.tui.widgets.reading_pane import ReadingPane


class CensusActions(LoomAppBase):
    # ----------------------------------------------------------------- shared checks

    def _model_work_blocker(self, what: str) -> str | None:
        """Why `what` (which needs the model and writes the loom) cannot start now."""
        if not self.session.personas:
            return f"{what} labels rollouts with personas: load a persona set first (ctrl+l)"
        blocker = self.session.generation_blocker()
        if blocker:
            return blocker
        if self.generation is not None:
            return "wait for the generation to finish (esc cancels it)"
        if self.model_job is not None:
            return f"wait for the {self.model_job.what} to finish (esc stops it)"
        return None

    def _census_settings(self) -> CensusSettings:
        return CensusSettings(
            rollouts=self.config.census_rollouts,
            tokens=self.config.census_tokens,
            batch=self.session.parallel_sequences(),
            threshold=self.config.persona_threshold,
        )

    # ----------------------------------------------------------------- the census panel

    def action_census(self) -> None:
        """The census of the current node: its last stored census (r runs a new one), else a
        new census at once."""
        node_id = self.current
        stored = self.session.censuses(node_id)
        shown = next((c for c in reversed(stored) if c.token_index is None), None)
        if shown is None:
            blocker = self._model_work_blocker("a census")
            if blocker:
                self.notify(blocker, severity="warning", title="Can't take a census")
                return
        self._open_census(node_id, None, shown)

    def on_reading_pane_census_requested(self, message: ReadingPane.CensusRequested) -> None:
        path = self.reading.path
        if path is None:
            return
        node_id = path.owners[message.index]
        start, _end = path.node_spans[node_id]
        if not path.tokens.top(message.index):
            self.notify("no alternatives recorded for this token (the model did not write it)",
                        severity="warning")  # fmt: skip
            return
        blocker = self._model_work_blocker("a census")
        if blocker:
            self.notify(blocker, severity="warning", title="Can't take a census")
            return
        self._open_census(node_id, message.index - start, None)

    def _open_census(
        self, node_id: int, token_index: int | None, shown: CensusResult | None
    ) -> None:
        settings = self._census_settings()
        session = self.session

        def run(cancel: threading.Event, progress: Callable[[int, int], None]) -> CensusResult:
            return session.run_census(
                node_id, settings, token_index=token_index, cancel=cancel, progress=progress
            )

        where = f"#{node_id}" if token_index is None else f"#{node_id}, token {token_index + 1}"
        self.push_screen(
            CensusScreen(
                f"Census of {where} — how often each persona comes next",
                self.persona_colours(),
                run=run,
                save=self._save_census,
                promote=self._promote_rollout,
                shown=shown,
            )
        )

    @reports_errors
    def _save_census(self, result: CensusResult) -> bool:
        self.session.save_census(result)
        done = len(result.outcomes[0].census.rollouts) * len(result.outcomes)
        self.notify(f"census of #{result.node_id} kept ({done} rollouts; u undoes)", timeout=3)
        return True

    @reports_errors
    def _promote_rollout(self, result: CensusResult, outcome: int, rollout: int) -> None:
        if not self.writable():
            return
        node_id = self.session.promote_rollout(result, outcome, rollout)
        self.rebuild_tree()  # a census at a token split its node first
        self.go_to(node_id)
        self.notify(f"rollout promoted into the tree as #{node_id} (u undoes)", timeout=3)

    # ----------------------------------------------------------------- model jobs

    def start_model_job(self, what: str) -> ModelJob | None:
        blocker = self._model_work_blocker(what)
        if blocker:
            self.notify(blocker, severity="warning", title=f"Can't start the {what}")
            return None
        job = ModelJob(what)
        self.model_job = job
        self.status.show(job=f"{what}… esc stops")
        return job

    def end_model_job(self, job: ModelJob) -> None:
        if self.model_job is job:
            self.model_job = None
        self.status.show(job="")

    def job_progress(self, job: ModelJob) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self.post_message(JobProgress(job, done, total))

        return report

    def on_job_progress(self, message: JobProgress) -> None:
        if self.model_job is message.job and message.total:
            pct = 100 * message.done // message.total
            self.status.show(job=f"{message.job.what} {pct}% · esc stops")

    # ----------------------------------------------------------------- the fork map

    def action_fork_map(self) -> None:
        job = self.start_model_job("fork map")
        if job is not None:
            self._fork_worker(job, self.current, self.config.fork_budget)

    @work(thread=True, group="fork-map", exit_on_error=False)
    def _fork_worker(self, job: ModelJob, node_id: int, budget: int) -> None:
        try:
            found = self.session.fork_map(
                node_id, budget, cancel=job.cancel, progress=self.job_progress(job)
            )
        except Exception as exc:  # reported on the UI thread
            self.post_message(ForkMapDone(job, None, exc))
        else:
            self.post_message(ForkMapDone(job, found, None))

    def on_fork_map_done(self, message: ForkMapDone) -> None:
        self.end_model_job(message.job)
        found = message.fork_map
        if message.error is not None or found is None:
            self.notify(str(message.error), severity="error", title="No fork map")
            return
        path = self.reading.path
        self.fork_map = found
        self.fork_ids = path.tokens.ids.copy() if path is not None else None
        self.refresh_fork_marks()
        forking = found.forking()
        note = " (stopped: the points measured so far)" if found.cancelled else ""
        self.notify(
            f"fork map: {len(found.points)} token(s) weighed, {len(forking)} forking (double "
            f"underline; i and the cursor show each alternative's outcome){note}",
            timeout=6,
        )

    def refresh_fork_marks(self) -> None:
        """Mark the forking tokens while the path shown still starts with the mapped one."""
        found = self._fork_map_here()
        marks = () if found is None else (p.index for p in found.forking())
        self.reading.set_fork_marks(frozenset(marks))

    def _fork_map_here(self) -> ForkMap | None:
        """The last fork map, if the path shown starts with the tokens it was made on (an edit,
        a split or another branch makes its positions another story's)."""
        path, mapped = self.reading.path, self.fork_ids
        if self.fork_map is None or path is None or mapped is None or len(path) < len(mapped):
            return None
        return self.fork_map if np.array_equal(path.tokens.ids[: len(mapped)], mapped) else None

    def fork_outcomes_at(
        self, index: int
    ) -> tuple[ForkPoint, tuple[str, ...], dict[str, str]] | None:
        found = self._fork_map_here()
        point = None if found is None else next((p for p in found.points if p.index == index), None)
        return (
            None if point is None or found is None else (point, found.names, self.persona_colours())
        )

    def go_to(self, node_id: int, path_ids: list[int] | None = None) -> None:
        super().go_to(node_id, path_ids)
        if self.fork_map is not None:
            self.refresh_fork_marks()

    # ----------------------------------------------------------------- the transition table

    def action_transitions(self) -> None:
        job = self.start_model_job("transition table")
        if job is not None:
            settings = self._census_settings()
            settings = replace(settings, rollouts=min(settings.rollouts, 8))  # per labelled node
            self._transitions_worker(job, self.current, settings)

    @work(thread=True, group="transitions", exit_on_error=False)
    def _transitions_worker(self, job: ModelJob, root: int, settings: CensusSettings) -> None:
        try:
            pairs, fresh = self.session.plan_transitions(
                root, settings, cancel=job.cancel, progress=self.job_progress(job)
            )
        except Exception as exc:  # reported on the UI thread
            self.post_message(TransitionsDone(job, [], [], exc))
        else:
            self.post_message(TransitionsDone(job, pairs, fresh, None))

    def on_transitions_done(self, message: TransitionsDone) -> None:
        self.end_model_job(message.job)
        if message.error is not None:
            self.notify(str(message.error), severity="error", title="No transition table")
            return
        if not message.pairs:
            self.notify("no labelled node in this subtree (r labels nodes)", severity="warning")
            return
        if self._save_censuses(message.fresh) is None:
            return
        table = transition_table(message.pairs)
        tokens = message.pairs[0][1].settings.tokens
        self.push_screen(
            MessageScreen(
                f"Persona transitions in the subtree of #{self.current} "
                f"({len(message.fresh)} new census(es) kept)",
                transition_text(table, tokens, self.persona_colours()),
            )
        )

    @reports_errors
    def _save_censuses(self, results: list[CensusResult]) -> bool:
        self.session.save_censuses(results)  # one undo step for the table's censuses
        return True

    # ----------------------------------------------------------------- guided growth

    def action_grow(self) -> None:
        blocker = self._model_work_blocker("guided growth")
        if blocker:
            self.notify(blocker, severity="warning", title="Can't grow")
            return
        options: list[tuple[Text, str]] = [
            (Text("explore — where the persona posterior is most uncertain"), "explore"),
            *(
                (Text(f"hunt:{name} — best-first toward {name}"), f"hunt:{name}")
                for name in self.persona_names()
            ),
            (Text("fork — split at the highest-entropy tokens, grow the alternatives"), "fork"),
        ]
        self.push_screen(
            ChoiceScreen(f"Grow the subtree of #{self.current} by which policy?", options),
            self._grow_policy_chosen,
        )

    def _grow_policy_chosen(self, policy: str | None) -> None:
        if policy is None:
            return
        root = self.current

        def budget_given(text: str | None) -> None:
            if text is not None:
                self.start_growth(root, policy, text)

        self.push_screen(
            PromptScreen(
                f"Budget for {policy}",
                value=str(self.config.growth_budget),
                hint="tokens to generate (or seconds, as 30s) · enter start · esc cancel",
            ),
            budget_given,
        )

    def start_growth(self, root: int, policy_text: str, budget_text: str) -> bool:
        budget = budget_text.strip().lower()
        try:
            seconds = float(budget[:-1]) if budget.endswith("s") else None
            tokens = None if seconds is not None else int(budget)
            policy = GrowthPolicy.parse(policy_text, self.persona_names())
            preset_n = int(self.preset.n or self.config.n)
            growth = Growth(self.session, policy, root, preset_n, self.sampler_settings(),
                            budget_tokens=tokens, budget_seconds=seconds)  # fmt: skip
        except ValueError as exc:  # GrowthError included
            message = str(exc) if isinstance(exc, GrowthError) else f"not a budget: {budget_text!r}"
            self.notify(message, severity="error", title="Can't grow")
            return False
        job = self.start_model_job(f"growing ({policy.name})")
        if job is None:
            return False
        self.growth = growth
        self._grow_next(job)
        return True

    def _grow_next(self, job: ModelJob) -> None:
        growth = self.growth
        assert growth is not None
        if job.cancel.is_set() or growth.spent:
            self._end_growth(job, "stopped" if job.cancel.is_set() else "budget spent")
            return
        try:
            plan = growth.plan()
        except Exception as exc:  # a loom changed under the plan: stop, keep what was made
            self._end_growth(job, f"stopped: {exc}")
            return
        if plan is None:
            self._end_growth(job, "nowhere left to grow")
            return
        self.status.show(job=f"{job.what}: step {growth.steps + 1}, {growth.tokens} tokens · "
                             "esc stops")  # fmt: skip
        self._growth_worker(job, growth, plan)

    @work(thread=True, group="growth", exit_on_error=False)
    def _growth_worker(self, job: ModelJob, growth: Growth, plan: GrowthPlan) -> None:
        try:
            step = growth.compute(plan, job.cancel)
        except Exception as exc:  # reported on the UI thread
            self.post_message(GrowthStepDone(job, None, exc))
        else:
            self.post_message(GrowthStepDone(job, step, None))

    def on_growth_step_done(self, message: GrowthStepDone) -> None:
        job, growth = message.job, self.growth
        if growth is None or self.model_job is not job:
            return
        if message.error is not None or message.step is None:
            self.notify(str(message.error), severity="error", title="Growth stopped")
            self._end_growth(job, "stopped by an error")
            return
        step = message.step
        if step.result.branches:
            if self._save_growth_step(step, growth) is None:
                self._end_growth(job, "stopped: the step could not be written")
                return
            # written and committed: now it is shown
            if step.plan.split_at is not None:
                self.rebuild_tree()
                self.go_to(self.current)
            else:
                self.show_new_children(step.plan.parent)  # labelled as they were written
        self._grow_next(job)

    @reports_errors
    def _save_growth_step(self, step: GrowthStep, growth: Growth) -> list[int]:
        return step.save(growth)

    def _end_growth(self, job: ModelJob, why: str) -> None:
        growth = self.growth
        self.growth = None
        self.end_model_job(job)
        if growth is not None:
            self.notify(
                f"grew {growth.steps} step(s), {growth.tokens} tokens ({growth.policy.name}): "
                f"{why}; each step is one undo (u)",
                timeout=5,
            )
