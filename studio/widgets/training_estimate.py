"""What training a planned U-Net will cost, roughly: the time on a 2-core CPU and the memory, from the engine's count
of the U-Net's parameters, forward FLOPs and activations at the planned image size and channels (`bridge.training_cost`,
on the meta device, once per configuration).

The count runs only while the box is shown: the first one warms up torch's meta device (~2 s on the reference CPU),
which must not delay the model the studio loads at start while the Dataset tab is hidden.
"""

from __future__ import annotations

import asyncio
import dataclasses

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from studio.bridge import PRESETS, EngineError, TrainConfig, TrainingCost, UNetConfig, human_bytes
from studio.widgets.plots import duration

# Training speed on the reference 2-core CPU (docs/performance.md): tiny, small and the paper's CIFAR-10 model all train
# at 115-165 GFLOP/s (a backward pass counted as twice the forward), plus ~30 ms of fixed cost per optimiser step, which
# is most of a micro step (measured: 500 images/s at batch 16). An estimate to plan with, not a measurement.
CPU_TRAIN_FLOP_PER_S = 140e9
STEP_OVERHEAD_S = 0.03


def training_estimate(cost: TrainingCost, train: TrainConfig, dataset_bytes: int = 0) -> tuple[float, int]:
    """(seconds, bytes) that training a U-Net of `cost` with the `train` recipe needs, roughly, on a 2-core CPU.

    Each image costs a forward and a backward pass, about 3x the forward FLOPs. Memory holds five fp32 copies of the
    parameters (weights, gradients, EMA, Adam's two moments), one batch's activations, and the dataset.
    """
    step_seconds = STEP_OVERHEAD_S + train.batch_size * 3 * cost.forward_flops / CPU_TRAIN_FLOP_PER_S
    memory = 5 * 4 * cost.parameters + train.batch_size * cost.activation_bytes + dataset_bytes
    return train.total_steps * step_seconds, int(memory)


class TrainingEstimateBox(QGroupBox):
    """`plan(preset, unet, dataset_bytes)` shows the estimate once the engine has counted `unet`;
    `estimate_shown((seconds, bytes))` when it is on screen. `set_training_steps(preset, steps)` gives the Training
    tab's step count: the estimate uses it while it plans for that preset, else the preset's own."""

    estimate_shown = Signal(object)

    def __init__(self, bridge, parent: QWidget | None = None):
        super().__init__("Training estimate", parent)
        self.bridge = bridge
        self.label = QLabel()
        self.label.setWordWrap(True)
        QVBoxLayout(self).addWidget(self.label)
        self._plan: tuple[str, UNetConfig | None, int, str] | None = None  # waiting to be shown
        self._generation = 0  # bumped by every plan: a count arriving for an older one is dropped
        self._cost: tuple[UNetConfig, TrainingCost] | None = None  # the last count, to redraw without the engine
        self._last_plan: tuple[str, UNetConfig | None, int, str] | None = None  # to redraw for new training steps
        self._training_steps: tuple[str, int] | None = None  # (preset, total steps) the Training tab shows

    def set_training_steps(self, preset: str | None, steps: int | None) -> None:
        """The Training tab's preset and total steps (None: unknown); the estimate follows them for that preset."""
        new = (preset, int(steps)) if preset and steps else None
        if new != self._training_steps:
            self._training_steps = new
            if self._last_plan is not None:
                self.plan(*self._last_plan)

    def total_steps(self, preset: str) -> tuple[int, str]:
        """(steps, whose) the estimate for `preset` assumes: the Training tab's while it shows this preset, else the
        preset's own."""
        if self._training_steps is not None and self._training_steps[0] == preset:
            return self._training_steps[1], "the Training tab's"
        return PRESETS[preset].train.total_steps, "the preset's"

    def plan(self, preset: str, unet: UNetConfig | None, dataset_bytes: int = 0, problem: str = "") -> None:
        """Estimate training `preset`'s recipe on `unet` (None with a `problem` that says why it cannot train)."""
        self._generation += 1
        self._plan = self._last_plan = (preset, unet, dataset_bytes, problem)
        if self.isVisible():
            self._show_plan()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._plan is not None:
            self._show_plan()

    def _show_plan(self) -> None:
        (preset, unet, dataset_bytes, problem), self._plan = self._plan, None
        if unet is None:
            self.label.setText(problem)
        elif self._cost is not None and self._cost[0] == unet:
            self._render(preset, unet, self._cost[1], dataset_bytes)
        else:  # submitted now, not when the task first runs, so that the newest request is the last one submitted
            counted = self.bridge.training_cost(unet)
            asyncio.ensure_future(self._await_cost(self._generation, preset, unet, dataset_bytes, counted))

    async def _await_cost(
        self, generation: int, preset: str, unet: UNetConfig, dataset_bytes: int, counted: asyncio.Future
    ) -> None:
        try:
            cost = await counted
        except asyncio.CancelledError:
            return  # a newer request superseded this one
        except EngineError as e:
            if generation == self._generation:
                self.label.setText(f"Could not estimate the training cost: {e}")
            return
        self._cost = (unet, cost)
        if generation == self._generation:
            self._render(preset, unet, cost, dataset_bytes)

    def _render(self, preset: str, unet: UNetConfig, cost: TrainingCost, dataset_bytes: int) -> None:
        steps, whose = self.total_steps(preset)
        train = dataclasses.replace(PRESETS[preset].train, total_steps=steps)
        seconds, memory = training_estimate(cost, train, dataset_bytes)
        (height, width), channels = unet.image_size, unet.in_channels
        self.label.setText(
            f"<b>~{duration(seconds)}</b> for {steps:,} steps ({whose}) at batch {train.batch_size} "
            f"({preset}: {cost.parameters / 1e6:.2f}M parameters, {height}×{width}×{channels}) on a 2-core CPU; "
            f"a GPU is far faster.<br><b>~{human_bytes(memory)}</b> of memory (weights, EMA, Adam, "
            f"{human_bytes(cost.activation_bytes)} of activations per image"
            + (", the images" if dataset_bytes else "")
            + ").<br><i>A rough estimate, not a measurement.</i>"
        )
        self.estimate_shown.emit((seconds, memory))
