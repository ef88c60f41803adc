"""The one studio module that talks to the engine: jobs go out, events come back as Qt signals and asyncio futures.

Panels call coroutines such as `images = await bridge.sample(n=16, seed=seed)` or pass an `on_progress` callback
for progressive views; they never see a tensor (the engine's jobs return uint8 numpy arrays). Engine events arrive
on the engine thread and are re-emitted on the GUI thread through a queued signal, so every slot and every future
callback runs on the GUI thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from engine import data_jobs, figures, jobs, limits, refine
from engine.compiled import CompileStatus
from engine.config import PRESETS, DiffusionConfig, Precision, Preset, TrainConfig, UNetConfig, to_jsonable
from engine.data import IMAGE_EXTENSIONS, DataError, DataSpec, FitMode, decode_image, detect_source, fit_array
from engine.data import parse_data_spec as read_data_spec
from engine.data.report import human_bytes
from engine.figures import frame_steps, strip_layout, trajectory_layout
from engine.images import captioned, grid_shape, make_grid, read_png_metadata, save_gif, save_png, strip, upscale
from engine.loading import BUNDLED_RUN, identity_provenance, run_name
from engine.progress import Progress, Stage
from engine.runs import MetricsFollower, RunError, RunSpec, default_runs_folder, read_run_record, step_files
from engine.train_events import (
    CheckpointSaved,
    RolledBack,
    SamplesReady,
    StepDone,
    StepLogged,
    StepSkipped,
    TrainFinished,
    TrainStarted,
)
from engine.worker import EngineWorker, JobCancelled, JobFailed, JobFinished, JobKey, JobProgress, JobStarted, Priority

# Re-exported for panels, which must not import the engine's torch-backed modules themselves.
Refined = refine.Refined
Samples = figures.Samples
TrajectoryFrames = figures.TrajectoryFrames
ModelInfo = jobs.ModelInfo
DataPreview = data_jobs.DataPreview
LikelihoodResult = figures.LikelihoodResult
TrainingCost = jobs.TrainingCost
__all__ = [
    "Bridge",
    "JobKey",
    "EngineError",
    "Refined",
    "Progress",
    "Stage",
    "Samples",
    "TrajectoryFrames",
    "ModelInfo",
    "DataPreview",
    "LikelihoodResult",
    "TrainingCost",
    "PRESETS",
    "Preset",
    "Precision",
    "TrainConfig",
    "UNetConfig",
    "DiffusionConfig",
    "RunSpec",
    "RunError",
    "MetricsFollower",
    "step_files",
    "read_run_record",
    "default_runs_folder",
    "to_jsonable",
    "save_png",
    "save_gif",
    "make_grid",
    "grid_shape",
    "frame_steps",
    "upscale",
    "captioned",
    "strip",
    "strip_layout",
    "trajectory_layout",
    "read_png_metadata",
    "BUNDLED_RUN",
    "run_name",
    "identity_provenance",
    "human_bytes",
    "limits",
    "spin_range",
    "IMAGE_SUFFIXES",
    "image_file_filter",
    "open_source_image",
    "fit_source_image",
    "DataSpec",
    "FitMode",
    "read_data_spec",
    "source_kind",
    "TrainStarted",
    "StepDone",
    "StepLogged",
    "SamplesReady",
    "CheckpointSaved",
    "StepSkipped",
    "RolledBack",
    "TrainFinished",
]


def spin_range(limit: limits.Limit, high: float | None = None) -> tuple[int, int]:
    """An engine limit as the (minimum, maximum) of a QSpinBox, which holds at most 2**31 - 1."""
    top = limit.high if high is None else high
    return int(limit.low), int(min(top, 2**31 - 1))


# ---- the engine's rules, for panels that must not import it (plain functions: no torch work on the GUI thread) ----

IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))  # what an image folder's files may end in


def image_file_filter() -> str:
    """A file dialog's filter for the image files the engine reads."""
    return f"Images ({' '.join('*' + suffix for suffix in IMAGE_SUFFIXES)});;All files (*)"


def open_source_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """An image file as an interpolation source, [H, W, C] uint8 at the model's size: decoded and centre-cropped
    exactly as `ddpm interpolate --a FILE` and the data loader do (ValueError or OSError on a bad file)."""
    return decode_image(path, size, channels, FitMode.CROP)


def fit_source_image(image: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """An image of another shape than the model's (a dataset image), brought to it as `open_source_image` would."""
    return fit_array(image, size, channels, FitMode.CROP)


def source_kind(source: str) -> str | None:
    """What a data source is ("builtin:shapes", "folder", "cifar10", "idx"), or None where it is none of them."""
    try:
        return detect_source(source).value
    except (DataError, OSError):
        return None


class EngineError(RuntimeError):
    """A job failed on the engine thread; the message is meant for a person."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


class Bridge(QObject):
    job_started = Signal(int, str)  # job id, key
    job_finished = Signal(int, str)
    job_failed = Signal(int, str, str)  # job id, key, message
    job_cancelled = Signal(int, str)
    model_changed = Signal(object)  # jobs.ModelInfo
    train_event = Signal(object)  # engine.train events (TrainStarted, StepDone, StepLogged, SamplesReady, ...)
    training_changed = Signal(bool)  # a training job started (True) or ended (False)
    compile_changed = Signal(object)  # engine.compiled.CompileStatus of the explored model's compiled path
    _engine_event = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._futures: dict[int, asyncio.Future] = {}
        self._progress: dict[int, Callable[[Any], None]] = {}
        self._keys: dict[int, str] = {}
        self._running: set[int] = set()
        self._train_job: int | None = None
        self.model: jobs.ModelInfo | None = None  # the explored model: the studio's one description of it
        self.compile_status: CompileStatus = CompileStatus("off")  # its compiled path, from the engine's events
        self._compile_words: dict[int, CompileStatus] = {}  # the newest word of each compile, by handle
        self._engine_event.connect(self._on_engine_event, Qt.ConnectionType.QueuedConnection)
        self._worker = EngineWorker(emit=self._engine_event.emit)

    # ---- generic ----

    def submit(
        self,
        key: str,
        fn,
        priority: Priority = Priority.ONE_OFF,
        on_progress: Callable[[Any], None] | None = None,
        graceful: bool = False,
        supersede: bool = True,
    ) -> asyncio.Future:
        """Run an engine job; the future resolves with its result (cancelled if superseded, EngineError if it failed)
        and names the job in `future.job_id` (for `cancel_job`).

        Interactive views supersede their own key (a slider's old value is never finished); one-off requests that
        several panels make independently (a sample, some dataset images) pass supersede=False and all complete.
        """
        future = asyncio.get_event_loop().create_future()
        if supersede:  # the older job of this key is cancelled: its progress, still in the queue, is not shown
            self._progress = {j: cb for j, cb in self._progress.items() if self._keys.get(j) != key}
        job_id = self._worker.submit(key, fn, priority, supersede=supersede, graceful=graceful)
        future.job_id = job_id
        self._futures[job_id] = future
        self._keys[job_id] = key
        if on_progress is not None:
            self._progress[job_id] = on_progress
        return future

    def cancel(self, key: str) -> None:
        self._worker.cancel(key=key)

    def cancel_job(self, job_id: int) -> None:
        """Cancel one job (where several of a key run side by side, as sample grids and source boxes' samples do)."""
        self._worker.cancel(job_id=job_id)

    @property
    def busy(self) -> list[str]:
        """The keys of the jobs running now (for the status bar)."""
        return [self._keys[j] for j in self._running if j in self._keys]

    def _on_engine_event(self, event: Any) -> None:
        if isinstance(event, CompileStatus):
            self._compile_words[event.handle] = event
            if self.model is not None and event.handle == self.model.compile.handle:
                self.compile_status = event
                self.compile_changed.emit(event)
            return  # else a cancelled compile's late word, or one that came before its model: kept above
        job_id = event.job_id
        if isinstance(event, JobProgress):
            if job_id == self._train_job:
                self.train_event.emit(event.value)
            callback = self._progress.get(job_id)
            if callback is not None:
                callback(event.value)
            return
        if isinstance(event, JobStarted):
            self._running.add(job_id)
            self.job_started.emit(job_id, event.key)
            return
        self._running.discard(job_id)
        future = self._futures.pop(job_id, None)
        self._progress.pop(job_id, None)
        self._keys.pop(job_id, None)
        if job_id == self._train_job:
            self._train_job = None
            self.training_changed.emit(False)
        if isinstance(event, JobFinished):
            if isinstance(event.result, jobs.ModelInfo):
                self.model = event.result
                status = event.result.compile
                self.compile_status = self._compile_words.get(status.handle, status) if status.handle else status
                self._compile_words.clear()
                self.model_changed.emit(event.result)
                self.compile_changed.emit(self.compile_status)
            if future is not None and not future.done():
                future.set_result(event.result)
            self.job_finished.emit(job_id, event.key)
        elif isinstance(event, JobFailed):
            if future is not None and not future.done():
                future.set_exception(EngineError(event.message, event.details))
            self.job_failed.emit(job_id, event.key, event.message)
        elif isinstance(event, JobCancelled):
            if future is not None and not future.done():
                future.cancel()
            self.job_cancelled.emit(job_id, event.key)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every job (training saves its checkpoint first) and end the engine thread."""
        self._worker.shutdown(timeout)

    # ---- the studio's jobs ----

    def load_model(self, source: str, weights: str = "ema") -> asyncio.Future:
        return self.submit(JobKey.MODEL, jobs.load_model_job(source, weights), Priority.ONE_OFF)

    def sample(
        self,
        n: int,
        seed: int,
        num_steps: int | None = None,
        eta: float = 1.0,
        on_progress: Callable[[Any], None] | None = None,
    ) -> asyncio.Future:
        return self.submit(
            JobKey.SAMPLE, jobs.sample_job(n, seed, num_steps, eta), Priority.ONE_OFF, on_progress, supersede=False
        )

    def trajectory(
        self, n: int, seed: int, on_frames: Callable[[TrajectoryFrames], None] | None = None
    ) -> asyncio.Future:
        return self.submit(JobKey.TRAJECTORY, jobs.trajectory_job(n, seed), Priority.ONE_OFF, on_frames)

    def fork(
        self,
        trajectory_id: int,
        index: int,
        t: int,
        forks: int,
        seed: int,
        on_refined: Callable[[Any], None] | None = None,
    ) -> asyncio.Future:
        return self.submit(
            JobKey.FORK, jobs.fork_job(trajectory_id, index, t, forks, seed), Priority.INTERACTIVE, on_refined
        )

    def interpolate(
        self,
        a: np.ndarray,
        b: np.ndarray,
        t: int,
        lambdas: Sequence[float],
        seed: int,
        on_refined: Callable[[Any], None] | None = None,
        exact: bool = True,
    ) -> asyncio.Future:
        return self.submit(
            JobKey.INTERPOLATE, jobs.interpolate_job(a, b, t, lambdas, seed, exact), Priority.INTERACTIVE, on_refined
        )

    def likelihood(
        self, images: np.ndarray, seed: int = 0, on_progress: Callable[[Any], None] | None = None
    ) -> asyncio.Future:
        return self.submit(JobKey.LIKELIHOOD, jobs.likelihood_job(images, seed), Priority.ONE_OFF, on_progress)

    def load_dataset(self, spec: str, on_progress: Callable[[Any], None] | None = None) -> asyncio.Future:
        """DataPreview of a data spec, loaded into the engine; `on_progress` gets Progress (stage, done, total)."""
        return self.submit(JobKey.DATASET, data_jobs.dataset_job(spec), Priority.ONE_OFF, on_progress)

    def dataset_images(self, indices: Sequence[int]) -> asyncio.Future:
        return self.submit(
            JobKey.DATASET_IMAGES, data_jobs.dataset_images_job(list(indices)), Priority.ONE_OFF, supersede=False
        )

    def held_out_images(
        self,
        spec: str,
        n: int | None = None,
        trained_on: str | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> asyncio.Future:
        """HeldOutImages: the first n images (None: all) of a data spec, [K, H, W, C] uint8, what they are and why
        a model trained on `trained_on` may score them misleadingly; the loaded dataset stays as it is."""
        job = data_jobs.held_out_images_job(spec, n, trained_on)
        return self.submit(JobKey.HELD_OUT, job, Priority.ONE_OFF, on_progress)

    def training_cost(self, unet: UNetConfig) -> asyncio.Future:
        """TrainingCost (parameters, forward FLOPs, activation bytes per image) of a U-Net config; a newer request
        supersedes an older one."""
        return self.submit(JobKey.TRAINING_COST, jobs.training_cost_job(unet), Priority.ONE_OFF)

    def start_training(self, run_dir: str, spec=None, total_steps: int | None = None) -> asyncio.Future:
        """Train in the background (resuming the run if it exists); `train_event` carries its events."""
        future = self.submit(JobKey.TRAIN, jobs.train_job(run_dir, spec, total_steps), Priority.TRAINING, graceful=True)
        self._train_job = future.job_id
        self.training_changed.emit(True)
        return future

    def stop_training(self) -> None:
        """Finish the current step, save a checkpoint, end the training job."""
        self.cancel(JobKey.TRAIN)

    @property
    def training(self) -> bool:
        return self._train_job is not None
