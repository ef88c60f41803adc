"""The training loop (Ho et al. 2020, Algorithm 1), written as one readable generator of events.

    repeat: x_0 ~ data;  t ~ Uniform({1..T});  eps ~ N(0, I)
            gradient step on || eps - eps_theta(sqrt(a-bar_t) x_0 + sqrt(1 - a-bar_t) eps, t) ||^2

around which sit the paper's recipe (Adam, linear warmup, gradient clipping, EMA of the weights), a guard against
non-finite steps, periodic sample grids from the EMA and the raw weights, and atomic checkpoints. `Trainer.run`
yields an event per logged step, grid, checkpoint, skip or rollback; the CLI prints them, the studio turns them
into signals, the tests assert on them. Stopping is cooperative: `stop()` is asked between steps.

Resume is exact: every step's randomness (t, eps, dropout) is drawn from generators seeded by (seed, step), and the
data order by (seed, epoch), so N steps straight and N/2 + resume + N/2 give the same weights bit for bit on a CPU.

Distributed (under torchrun, see distributed.py) it is the same computation: `batch_size` stays the global batch, each
of the W processes takes its contiguous 1/W of every global batch and of the step's t and eps (drawn for the whole
batch, then sliced), and DistributedDataParallel averages the gradients, so W processes and one make the same update up
to the order of float sums (dropout masks aside: each process draws its own). Decisions that change control flow
(stop, skip, roll back) are all-reduced so every process takes them at the same step; only rank 0 writes the run
directory (metrics, checkpoints, sample grids), and the logged metrics describe the global batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from . import distributed
from .atomic import remove_leftovers
from .config import LRSchedule, to_jsonable
from .data import BatchPosition, ImageDataset, batches, load_dataset
from .device import Denoiser, autocast, pick_device, resolve_precision
from .diffusion import GaussianDiffusion
from .figures import chain_length, draw_samples, sampler_name
from .images import make_grid, save_png, upscale
from .progress import Progress, Stage, Work
from .runs import Run, RunError
from .train_events import (
    BusyClock,
    CheckpointSaved,
    SamplesReady,
    StepDone,
    StepLogged,
    StepSkipped,
    StepStats,
    TrainEvent,
    TrainFinished,
    TrainStarted,
)
from .train_state import TrainerState, make_adam
from .unet import UNet, count_parameters


def _step_seed(seed: int, step: int, stream: int, rollbacks: int, rank: int = 0) -> int:
    """A seed for one step's draws; after a rollback the replayed steps draw afresh instead of diverging again.
    `rank` > 0 gives each distributed process its own stream (for the draws that are not shared, i.e. dropout)."""
    entropy = [seed, step, stream, rollbacks] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


class Trainer(TrainerState):
    """Owns the model, its EMA copy, the optimiser and the data stream of one run; what a checkpoint holds of it is
    saved and loaded by TrainerState (engine/train_state.py)."""

    def __init__(self, run: Run, device: torch.device | str | None = None, dataset: ImageDataset | None = None):
        self.run_dir = run
        if "imported" in run.record:  # its checkpoint has weights only: no optimiser, data position or history
            raise RunError(f"{run.root} holds an imported model: explore it, or train a new run")
        spec = run.spec
        self.config = spec.train
        self.device = distributed.rank_device(pick_device(str(device) if device is not None else None))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.shard_size = distributed.shard_size(self.config.batch_size)  # this process's part of every global batch
        self.precision = resolve_precision(self.config.precision, self.device)
        self.dataset = dataset if dataset is not None else load_dataset(spec.data)
        if (self.dataset.channels, self.dataset.image_size) != (spec.unet.in_channels, spec.unet.image_size):
            raise ValueError(
                f"the data is {self.dataset.image_size} with {self.dataset.channels} channels but the model "
                f"expects {spec.unet.image_size} with {spec.unet.in_channels}"
            )
        self.diffusion = GaussianDiffusion(spec.diffusion, self.device)
        torch.manual_seed(self.config.seed)  # the initial weights
        self.model = UNet(spec.unet).to(self.device)
        # The EMA lives on every process, identical everywhere since the weights are: every process then runs the same
        # step, load and rollback code, at the cost of one more copy of the weights per device (Adam keeps two).
        self.ema = UNet(spec.unet).to(self.device).eval().requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        # The network the step runs: DDP all-reduces the gradients during backward. Same seed, same initial weights on
        # every process (and DDP broadcasts rank 0's to make sure).
        self.network: nn.Module = self.model
        if distributed.is_distributed():
            self.network = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = make_adam(self.model.parameters(), self.config.learning_rate, self.device)
        self.step = 0
        self.rollbacks = 0
        self.warnings: list[str] = []  # said once, at the start of run(): e.g. the data changed since the checkpoint
        self.resumed_from: int | None = None
        self._batches = None
        self._start_position = BatchPosition()
        self._passed_over: list[str] = []
        self._clock = BusyClock()  # the loop's own time (see run)
        # The loss window since the last logged step, [4] sums and [4] counts by t-quartile: saved with each
        # checkpoint, so a stopped-and-resumed run logs the same losses as one that ran straight through.
        self._window = (torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))

    # ---- one step of Algorithm 1 ----

    def learning_rate(self, step: int) -> float:
        """Linear warmup over `warmup_steps`, then constant (Ho et al. 2020, Appendix B) or, as an option, a half
        cosine down to 0 at the config's `total_steps` (and 0 past it: train longer by raising `total_steps`)."""
        cfg = self.config
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.lr_schedule is LRSchedule.CONSTANT or step < cfg.warmup_steps:
            return cfg.learning_rate * warm
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def ema_decay(self, step: int) -> float:
        if self.config.ema_warmup:  # ours: short runs average over fewer steps, so early EMA samples are not noise
            return min(self.config.ema_decay, (1 + step) / (10 + step))
        return self.config.ema_decay

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(this process's shard of the global batch [B', C, H, W], kept [batch_size / world_size] bool)."""
        if self._batches is None:
            generator = torch.Generator().manual_seed(self.config.seed)
            self._batches = batches(
                self.dataset,
                self.config.batch_size,
                generator,
                self.config.hflip,
                start=self._start_position,
                device=self.device,
                shard=self.rank,
                num_shards=self.world_size,
            )
        return self._batches.next_with_kept()

    def train_step(self) -> StepStats:
        """One optimiser step on the global batch (this process computes its shard); nothing is applied, on any
        process, if a loss or the gradient is non-finite anywhere (`StepStats.problem` says which)."""
        x0, kept = self._next_batch()
        # t and eps for the whole global batch, then this process's slice of it: the same examples on any number of
        # processes (one process: the slice is everything).
        g = torch.Generator().manual_seed(_step_seed(self.config.seed, self.step, 0, self.rollbacks))
        t_all = torch.randint(0, self.diffusion.num_timesteps, (self.config.batch_size,), generator=g)
        noise_all = torch.randn((self.config.batch_size, *x0.shape[1:]), generator=g)
        shard = slice(self.rank * self.shard_size, (self.rank + 1) * self.shard_size)
        t, noise = t_all[shard][kept].to(self.device), noise_all[shard][kept].to(self.device)
        # Dropout draws from the global generator; each process its own stream.
        torch.manual_seed(_step_seed(self.config.seed, self.step, 1, self.rollbacks, self.rank))

        self.network.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        with autocast(self.device, self.precision):
            losses = self.diffusion.training_losses(self.network, x0, t, noise)  # Ho et al. 2020, Eq. 14; [B']
        # DDP averages the processes' gradients, so each one's sum over its shard size makes the global batch's mean.
        # An image that failed to decode (streamed data) counts as zero rather than reweighting the others.
        loss = losses.sum() / self.shard_size
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))

        stats = self._global_stats(losses.detach(), t, grad_norm)
        if stats.problem is not None or stats.count == 0:  # nothing to apply (count 0: a whole batch failed to decode)
            self.optimizer.zero_grad(set_to_none=True)
            return stats
        self.optimizer.step()
        with torch.no_grad():
            decay = self.ema_decay(self.step)
            ema_params, params = list(self.ema.parameters()), list(self.model.parameters())
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema <- decay * ema + (1 - decay) * theta
        return stats

    def _global_stats(self, losses: torch.Tensor, t: torch.Tensor, grad_norm: float) -> StepStats:
        """One all-reduce per step: the global batch's losses by t-quartile (for the log) and whether any process saw
        a non-finite loss or gradient, so that all of them skip (or roll back) together. losses, t: [B'] local."""
        quartile = (t * 4) // self.diffusion.num_timesteps
        losses = losses.to(torch.float64)
        bad_loss, bad_grad = not bool(torch.isfinite(losses).all()), not math.isfinite(grad_norm)
        local = torch.cat(
            [
                torch.zeros(4, dtype=torch.float64, device=losses.device).index_add_(0, quartile, losses),
                torch.bincount(quartile, minlength=4).to(torch.float64),
                torch.tensor([bad_loss, bad_grad], dtype=torch.float64, device=losses.device),
            ]
        )
        total = distributed.all_reduce_sum(local).cpu()  # [sums by quartile (4), counts by quartile (4), bad (2)]
        problem = "non-finite loss" if total[8] > 0 else "non-finite gradient" if total[9] > 0 else None
        return StepStats(total[:4], total[4:8], grad_norm, problem)

    # ---- previews ----

    def preview(self, count: int | None = None, num_steps: int | None = None, seed: int = 0) -> Work[tuple]:
        """Samples from the EMA and the live weights with the same noise (figures.draw_samples), one yield per
        network evaluation: ([N, H, W, C], [N, H, W, C]) uint8."""
        cfg = self.run_dir.spec.unet
        count = count or self.config.sample_count
        num_steps = num_steps or self.config.sample_steps
        shape = (count, cfg.in_channels, *cfg.image_size)
        grids = []
        for module in (self.ema, self.model):
            was_training = module.training
            module.eval()
            denoiser = Denoiser(module, self.precision, cuda_graphs=False)  # no graph memory beside training's
            try:
                grids.append(
                    (yield from draw_samples(denoiser, self.diffusion, shape, seed, num_steps, 1.0, Stage.PREVIEW))
                )
            finally:
                module.train(was_training)
        return grids[0], grids[1]

    def _save_preview(self) -> Work[SamplesReady]:
        ema, raw = yield from self.preview()
        # Zoomed (nearest neighbour) so a person opening the file can see a 16x16 sample; the studio re-zooms anyway.
        picture = upscale(make_grid(ema, nrow=int(math.ceil(math.sqrt(len(ema))))), max(1, 64 // ema.shape[1]))
        path = save_png(
            self.run_dir.samples_dir / f"step_{self.step:07d}.png",
            picture,
            {
                "run": self.run_dir.name,
                "step": str(self.step),
                "weights": "ema",
                "sampler": sampler_name(self.config.sample_steps, self.diffusion.num_timesteps),
                "steps": str(chain_length(self.config.sample_steps, self.diffusion.num_timesteps)),
                "seed": "0",
                "config": to_jsonable(self.run_dir.spec.unet),
                "hflip": "on" if self.config.hflip else "off",
            },
        )
        return SamplesReady(self.step, ema, raw, str(path))

    # ---- the loop ----

    def run(
        self,
        total_steps: int | None = None,
        stop: Callable[[], bool] = lambda: False,
        switch_points: bool = False,
    ) -> Iterator[TrainEvent | Progress | None]:
        """Train until `total_steps` (default: the config's) or until `stop()` is true; yields events.

        With `switch_points` it also yields the preview grid's `Progress`, and None between its network evaluations,
        so a consumer that shares the thread (the studio's engine thread) can serve other work there: a step, or one
        evaluation of a preview, is then the longest it waits.

        A `total_steps` other than the run's plan changes the plan (run.json's `train.total_steps`, with a line in
        its `history`): the cosine learning-rate decay is re-planned to end at the new total, as if the run had been
        planned that long from the start, so training a finished run further does not train at lr 0. The run
        directory is locked for writing while this runs (a second trainer of the same run is refused), and the
        temporary files of saves that a crash interrupted are removed first."""
        total = total_steps or self.config.total_steps
        with contextlib.ExitStack() as held:
            if distributed.is_main():
                held.enter_context(self.run_dir.writing())
                removed, size = remove_leftovers(
                    self.run_dir.root, self.run_dir.checkpoints_dir, self.run_dir.samples_dir
                )
                if removed:
                    self.warnings.append(
                        f"removed {removed} temporary file(s) of interrupted saves ({size / 2**20:,.1f} MiB)"
                    )
            if total != self.config.total_steps and self.step < total:
                self.warnings.append(self._replan(total))
            # Time counts only while the loop runs: between its events the consumer may do other work (the studio
            # serves a slider), which must not slow the logged images/s or stretch the ETA.
            events = self._run(total, stop)
            while True:
                self._clock.resume()
                try:
                    event = next(events)
                except StopIteration:
                    return
                finally:
                    self._clock.pause()
                if switch_points or not (event is None or isinstance(event, Progress)):
                    yield event

    def _run(self, total: int, stop: Callable[[], bool]) -> Iterator[TrainEvent]:
        cfg = self.config
        yield TrainStarted(
            self.step,
            total,
            self.resumed_from,
            str(self.device),
            self.precision.value,
            count_parameters(self.model),
            len(self.dataset),
            tuple(self.warnings),
            self.world_size,
        )
        first_save = self.step == 0 and not ckpt.list_checkpoints(self.run_dir.checkpoints_dir)
        distributed.barrier()  # every process has looked (and resumed) before rank 0 writes
        if first_save:
            yield CheckpointSaved(0, self.save())  # something to roll back to if the first steps diverge
        started = self._clock.elapsed()
        window_start, window_images, last_grad_norm = started, 0, 0.0
        bad_in_a_row = 0
        reason = "done"
        while self.step < total:
            if distributed.any_rank(stop()):  # a stop asked of any process stops them all at the same step
                reason = "stopped"
                break
            stats = self.train_step()
            if stats.problem is not None:
                bad_in_a_row += 1
                yield StepSkipped(self.step, stats.problem)
                if bad_in_a_row >= cfg.nonfinite_patience:
                    yield self._roll_back(f"{bad_in_a_row} non-finite steps in a row")
                    bad_in_a_row = 0
                continue
            if stats.count == 0:
                continue  # the whole batch failed to decode: no step was taken
            bad_in_a_row = 0
            self.step += 1
            window_sums, window_counts = self._window
            self._window = (window_sums + stats.loss_sum_by_quartile, window_counts + stats.count_by_quartile)
            window_images += stats.count
            last_grad_norm = stats.grad_norm
            yield StepDone(self.step, stats.loss)

            if self.step % cfg.log_every == 0 or self.step == total:
                now = self._clock.elapsed()
                rate = window_images / max(now - window_start, 1e-9)  # the global batch's images, this session
                yield self._log(*self._window, last_grad_norm, rate, now - started, total)
                window_start, window_images = now, 0
                self._window = (torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
            if self.step % cfg.sample_every == 0:
                if distributed.is_main():  # a yield per evaluation: the studio's sliders wait one at most
                    yield (yield from self._save_preview())
                distributed.barrier()  # the others wait while rank 0 alone samples
            if self.step % cfg.checkpoint_every == 0 and self.step != total:
                yield CheckpointSaved(self.step, self.save())
        yield CheckpointSaved(self.step, self.save())
        if self._batches is not None:  # stop any read-ahead threads; a later run() continues from here
            self._start_position = self._batches.position
            self._batches.close()
            self._batches = None
        distributed.barrier()  # the run is over when its last checkpoint is complete, for every process
        yield TrainFinished(self.step, reason)

    def _log(
        self, sums: torch.Tensor, counts: torch.Tensor, grad_norm: float, rate: float, elapsed: float, total: int
    ) -> StepLogged:
        """The window's mean loss, overall and by t-quartile, from global sums [4] and counts [4]; rank 0 writes it."""
        by_quartile = tuple(float(sums[q] / counts[q]) if counts[q] > 0 else None for q in range(4))
        remaining = (total - self.step) * self.config.batch_size / max(rate, 1e-9)
        event = StepLogged(
            self.step,
            float(sums.sum() / counts.sum().clamp(min=1)),
            by_quartile,
            self.learning_rate(self.step - 1),
            grad_norm,
            rate,
            remaining,
            elapsed,
        )
        if distributed.is_main():
            self.run_dir.append_metrics(
                {
                    "step": event.step,
                    "loss": event.loss,
                    "loss_q": list(by_quartile),
                    "lr": event.lr,
                    "grad_norm": grad_norm,
                    "img_per_s": rate,
                    "time": time.time(),
                    "elapsed_s": elapsed,
                }
            )
        return event
