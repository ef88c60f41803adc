"""A trainer's state across sessions: `open_trainer`, the one way to create a run's trainer or resume it; what a
checkpoint holds of it (the weights, their EMA, the optimiser, the data position, the rollbacks and the loss window
since the last logged step) and how that is saved and loaded; rolling back to the newest good checkpoint; a change
of the run's planned length; and the paper's optimiser, whose state a checkpoint must fit.

Everything is read and checked before anything changes, so a checkpoint that fails leaves the trainer as it was; a
damaged or foreign newest checkpoint does not block a run (the newest one that loads completely is used)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import checkpoint as ckpt
from . import distributed
from .config import LRSchedule
from .data import BatchPosition
from .runs import Run, RunError
from .train_events import RolledBack

if TYPE_CHECKING:  # train.py imports this module
    from .data import ImageDataset
    from .runs import RunSpec
    from .train import Trainer


def make_adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """The paper's optimiser, Adam (Kingma & Ba 2015) with torch's defaults (beta 0.9, 0.999; eps 1e-8), as torch's
    fused kernel where the device has one: one pass over each parameter instead of a dozen per-op sweeps
    (docs/performance.md). Same update, other rounding."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=True if fused else None)


def _count(value: object) -> int:
    """A non-negative integer from a checkpoint's JSON (ValueError otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


class TrainerState:
    """The checkpoint half of `train.Trainer` (which sets every attribute used here)."""

    def resume(self) -> list[str]:
        """Load the newest checkpoint of the run that loads completely, if any; returns why newer ones were passed
        over (a damaged or foreign newest checkpoint does not block the run: the previous good one is used)."""
        found = self._load_newest()
        if found is not None:
            self.resumed_from = found.step
            if distributed.is_main():
                self.run_dir.truncate_metrics_after(found.step)
        return self._passed_over

    def _load_newest(self) -> ckpt.Checkpoint | None:
        self._passed_over = []
        for meta in reversed(ckpt.list_checkpoints(self.run_dir.checkpoints_dir)):
            try:
                found = ckpt.load_checkpoint(meta)
                self._load(found)
                return found
            except ckpt.CheckpointError as e:
                self._passed_over.append(str(e))
        return None

    def _load(self, found: ckpt.Checkpoint) -> None:
        """Everything is read and checked before anything is changed: a checkpoint that fails leaves the trainer
        as it was (CheckpointError says why)."""
        meta = found.metadata
        try:
            optim_state = {"state": {}, "param_groups": meta["optimizer"]["param_groups"]}
            for key, tensor in found.group("optim").items():
                index, field = key.split(".", 1)
                optim_state["state"].setdefault(int(index), {})[field] = tensor
            position = BatchPosition(_count(meta["data_position"]["epoch"]), _count(meta["data_position"]["index"]))
            rollbacks = _count(meta.get("rollbacks", 0))
            window = meta.get("metrics_window", {"sums": [0.0] * 4, "counts": [0.0] * 4})
            window_sums = torch.tensor([float(x) for x in window["sums"]], dtype=torch.float64)
            window_counts = torch.tensor([float(x) for x in window["counts"]], dtype=torch.float64)
            assert window_sums.shape == window_counts.shape == (4,)
            for name, module in (("model", self.model), ("ema", self.ema)):
                ckpt.check_state_dict(module, found.group(name), name)
            for group in optim_state["param_groups"]:  # each names the kernel it was saved under: use ours
                group["fused"], group["foreach"] = self.optimizer.defaults["fused"], self.optimizer.defaults["foreach"]
            probe = make_adam(self.model.parameters(), self.config.learning_rate, self.device)
            probe.load_state_dict(optim_state)  # checks the groups against the parameters, changing nothing of ours
        except ckpt.CheckpointError as e:
            raise ckpt.CheckpointError(f"{found.path.name}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError, AssertionError, AttributeError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"{found.path.name}: its training state is unreadable ({e!r})") from None
        for name, module in (("model", self.model), ("ema", self.ema)):
            module.load_state_dict(found.group(name))
        self.optimizer.load_state_dict(optim_state)
        self.step = found.step
        self.rollbacks = rollbacks
        self._window = (window_sums, window_counts)
        saved_count = meta.get("data_count")
        if saved_count is not None and saved_count != len(self.dataset):
            # The stored position indexes an order of `saved_count` images: with more or fewer the run goes on,
            # but not on the images it would have seen. Say so rather than pretend the resume is exact.
            self.warnings.append(
                f"the dataset had {saved_count:,} images at step {found.step} and has "
                f"{len(self.dataset):,} now: the resumed run sees a different order"
            )
        self._start_position = position
        if self._batches is not None:
            self._batches.close()
        self._batches = None

    def save(self) -> str:
        """Write a checkpoint (rank 0 only: the others, identical, return the path it writes)."""
        if not distributed.is_main():
            return str(ckpt.checkpoint_paths(self.run_dir.checkpoints_dir, self.step)[1])
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        state = self.optimizer.state_dict()
        for index, fields in state["state"].items():
            tensors |= {f"optim.{index}.{name}": value for name, value in fields.items()}
        position = self._batches.position if self._batches is not None else self._start_position
        metadata = {
            "run": self.run_dir.name,
            **self.run_dir.spec.to_json(),
            "optimizer": {"param_groups": state["param_groups"]},
            "data_position": {"epoch": position.epoch, "index": position.index},
            "data_count": len(self.dataset),  # a resumed run whose data changed is told so (see _load)
            "precision": self.precision.value,
            "rollbacks": self.rollbacks,
            "metrics_window": {"sums": self._window[0].tolist(), "counts": self._window[1].tolist()},
        }
        path = ckpt.save_checkpoint(
            self.run_dir.checkpoints_dir, self.step, tensors, metadata, keep=self.config.keep_checkpoints
        )
        return str(path)

    def _replan(self, total: int) -> str:
        old = self.config.total_steps
        self.config = dataclasses.replace(self.config, total_steps=total)
        self.run_dir.spec = dataclasses.replace(self.run_dir.spec, train=self.config)
        if distributed.is_main():
            self.run_dir.record_plan_change(self.step, old, total)
        what = f"the run's plan changes from {old:,} to {total:,} steps at step {self.step:,}"
        if self.config.lr_schedule is LRSchedule.COSINE:
            what += f": the cosine learning-rate decay now ends at step {total:,}"
        return what

    def _roll_back(self, reason: str) -> RolledBack:
        from_step = self.step
        found = self._load_newest()
        if found is None:
            raise RuntimeError(
                f"training diverged ({reason}) and the run has no checkpoint to roll back to; "
                "lower the learning rate or use fp32"
            )
        self.rollbacks += 1
        return RolledBack(from_step, found.step, reason)


def open_trainer(
    run_dir: str | Path,
    spec: RunSpec | None = None,
    device: torch.device | str | None = None,
    dataset: ImageDataset | None = None,
) -> tuple[Trainer, list[str]]:
    """The one way the command line, the studio and torchrun's processes open a trainer: a folder that holds a run
    resumes it from its newest complete checkpoint (the run keeps its recipe); else the run is created from `spec`
    (RunSpec.for_data), trained on `dataset` where that is the spec's data (already loaded), else on the spec's data
    loaded afresh. Returns the trainer and why newer checkpoints were passed over.

    Under torchrun every process calls this: they decide together whether the run is new before rank 0 writes it
    (only rank 0 needs the spec), and the others read the run.json it wrote."""
    from .train import Trainer

    root = Path(run_dir)
    if not distributed.any_rank(not (root / "run.json").exists()):
        trainer = Trainer(Run.open(root), device=device)
        return trainer, trainer.resume()
    run = None
    if distributed.is_main():
        if spec is None:
            raise RunError(f"{root} holds no run to resume (no run.json)")
        run = Run.create(root, spec)
    distributed.barrier()  # rank 0 has written run.json: the others read the same spec from it
    run = run or Run.open(root)
    usable = dataset is not None and str(dataset.spec) == run.spec.data
    return Trainer(run, device=device, dataset=dataset if usable else None), []
