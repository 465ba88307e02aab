"""How workers reach the UI: every result, every progress report, is one of these messages.

Workers (generation, model loading, labelling, the multiverse, export) never touch a widget or
write the loom: they post a message, and its handler, on the UI thread, writes and shows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual.message import Message
from textual.widgets.tree import TreeNode

from loom.app.census import CensusResult
from loom.app.forks import ForkMap
from loom.app.generation import GenerationResult, StreamedToken
from loom.app.growth import GrowthStep
from loom.app.multiverse import MultiverseNode
from loom.app.scoring import ScoreRun
from loom.engine.backend import Backend
from loom.engine.sampling import SamplerSettings
from loom.personas.actions import LabelRun
from loom.store.model import Memory


@dataclass
class GenerationJob:
    parent_id: int
    n: int
    settings: SamplerSettings
    forced: list[int] | None
    second: bool = False  # written by the session's second model
    cancel: threading.Event = field(default_factory=threading.Event)
    pending: list[TreeNode[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    memory: list[Memory] = field(default_factory=list)  # the hidden context the model reads


@dataclass
class ModelJob:
    """Model work other than generation (a fork map, a transition table, guided growth): one at
    a time; esc sets `cancel`, and what was done by then is kept."""

    what: str  # for the status bar: "fork map", "transitions", "growing (explore)"
    cancel: threading.Event = field(default_factory=threading.Event)


class TokensArrived(Message):
    def __init__(self, job: GenerationJob, batch: list[StreamedToken]) -> None:
        super().__init__()
        self.job, self.batch = job, batch


class GenerationDone(Message):
    def __init__(
        self, job: GenerationJob, result: GenerationResult | None, error: Exception | None
    ) -> None:
        super().__init__()
        self.job, self.result, self.error = job, result, error


class ModelProgress(Message):
    """Assembling (total > 0) or loading (total 0) the model."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class ModelLoaded(Message):
    def __init__(
        self, backend: Backend | None, error: str, path: Path | None, *, second: bool = False
    ) -> None:
        super().__init__()
        self.backend, self.error, self.path = backend, error, path
        self.second = second  # loaded as the second model (beside the primary one)


class LabelsDone(Message):
    def __init__(self, run: LabelRun | None, error: Exception | None, quiet: bool) -> None:
        super().__init__()
        self.run, self.error, self.quiet = run, error, quiet


class ScoresDone(Message):
    """A reading of unscored text finished (`run` None: it failed with `error`)."""

    def __init__(self, run: ScoreRun | None, error: Exception | None, quiet: bool) -> None:
        super().__init__()
        self.run, self.error, self.quiet = run, error, quiet


class ScoreProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class MultiverseProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class MultiverseBuilt(Message):
    def __init__(self, root: MultiverseNode | None, error: Exception | None) -> None:
        super().__init__()
        self.root, self.error = root, error


class TransferProgress(Message):
    """An export or import under way: `done` of `total` (its own scale)."""

    def __init__(self, verb: str, done: int, total: int) -> None:
        super().__init__()
        self.verb, self.done, self.total = verb, done, total


class ExportDone(Message):
    def __init__(self, target: Path, nodes: int, error: Exception | None) -> None:
        super().__init__()
        self.target, self.nodes, self.error = target, nodes, error


class ImportDone(Message):
    """An import into a new loom file finished (`nodes` read, `warnings`), or failed."""

    def __init__(
        self, target: Path, nodes: int, warnings: list[str], error: Exception | None
    ) -> None:
        super().__init__()
        self.target, self.nodes, self.warnings, self.error = target, nodes, warnings, error


class Forked(Message):
    """A replay's fork was written (or not: `error`)."""

    def __init__(
        self, seq: int, path: Path, seconds: float | None, error: Exception | None
    ) -> None:
        super().__init__()
        self.seq, self.path, self.seconds, self.error = seq, path, seconds, error


class JobProgress(Message):
    def __init__(self, job: ModelJob, done: int, total: int) -> None:
        super().__init__()
        self.job, self.done, self.total = job, done, total


class CensusProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class CensusDone(Message):
    def __init__(self, result: CensusResult | None, error: Exception | None) -> None:
        super().__init__()
        self.result, self.error = result, error


class ForkMapDone(Message):
    def __init__(self, job: ModelJob, fork_map: ForkMap | None, error: Exception | None) -> None:
        super().__init__()
        self.job, self.fork_map, self.error = job, fork_map, error


class TransitionsDone(Message):
    def __init__(
        self,
        job: ModelJob,
        pairs: list[tuple[str, CensusResult]],
        fresh: list[CensusResult],
        error: Exception | None,
    ) -> None:
        super().__init__()
        self.job, self.pairs, self.fresh, self.error = job, pairs, fresh, error


class GrowthStepDone(Message):
    def __init__(self, job: ModelJob, step: GrowthStep | None, error: Exception | None) -> None:
        super().__init__()
        self.job, self.step, self.error = job, step, error
