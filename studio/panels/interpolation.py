"""The Interpolation panel (Ho et al. 2020, Sec. 4.4, Figs. 8-9): two sources, a mixing step t and a strip of λ.

Both sources are encoded with q(x_t|x_0) at the mixing step t, their noised latents mixed as (1-λ)x_t + λx'_t, and
the mix decoded by the reverse chain; the strip shows λ = 0 ... 1, whose ends reconstruct A and B. Every change of
t, λ, the column count or the seed asks the bridge for a new interpolation, which supersedes the running one, and
the strip refines in place: preview (x̂0, Eq. 15) -> settled (strided chain) -> exact (Alg. 2), with progress.
Values seen before come back from the engine's cache at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import (
    Progress,
    Refined,
    identity_provenance,
    limits,
    open_source_image,
    spin_range,
)
from studio.requests import ViewRequests
from studio.widgets.chain_view import chain_cost, stage_badge
from studio.widgets.image_grid import ImageGrid
from studio.widgets.source_box import SourceBox, SourceLoader, ranged

LAMBDA_STEPS = 20  # the λ slider moves in steps of 1/20 = 0.05
STAGE_NAMES = {"direct": "preview", "settled": "settled", "exact": "exact"}
T_TOOLTIP = (
    "The mixing step t (Fig. 9): both sources are noised to x_t with q(x_t|x_0), mixed, then denoised.\n"
    "Small t keeps the sources' fine detail (the mix is close to a cross-fade); large t keeps only their\n"
    "coarse layout and the model invents the rest. t = 0 mixes the pixels themselves."
)
LAMBDA_TOOLTIP = (
    "λ: the weight of B in the mixed latent x̄_t = (1-λ) x_t + λ x'_t (Fig. 8).\n"
    "λ = 0 and λ = 1 decode to reconstructions of A and B. The large view shows this λ."
)

EXPLANATION = (
    "How it works (Sec. 4.4): both sources are noised to step t with q(x_t|x_0) (Eq. 4), mixed as "
    "x̄_t = (1-λ) x_t + λ x'_t and decoded by the reverse chain. The noise is the same for every λ, so "
    "λ = 0 and λ = 1 reconstruct A and B. At small t the strip is a cross-fade that keeps the sources' "
    "detail; at large t only their coarse layout survives and the model invents the rest (Fig. 9)."
)


def lambda_text(lam: float) -> str:
    """λ as captions show it, the same way for every value: 0, 0.05, 0.125, 0.375, 0.333, 1."""
    return f"{lam:.3g}"


class InterpolationPanel(QWidget):
    """Figs. 8-9: interpolate between two sources in the noised latent space at the mixing step t."""

    title = "Interpolation"
    strip_shown = Signal(str)  # the stage shown now: 'direct' (preview), 'settled' or 'exact'

    def __init__(self, bridge, state, parent: QWidget | None = None):
        super().__init__(parent)
        self._bridge, self._state = bridge, state
        # One request at a time: a newer slider value supersedes the older (studio/requests.py).
        self._requests = ViewRequests(on_value=self._on_refined, on_done=lambda _: None, on_error=self._on_failed)
        self._request_key = None  # what was asked last
        self._lambdas: list[float] = []  # the λ values of the request in flight
        self._shown: tuple[list[float], np.ndarray, int, str] | None = None  # λ values, images [L, H, W, C], t, stage
        self._exact_strip: tuple | None = None  # the strip key of an exact strip on screen
        self._out_of_date = False  # the model changed while hidden: recompute on the next show

        self.source_a, self.source_b = SourceBox("A"), SourceBox("B")
        self.sources = SourceLoader(
            bridge, state, self.set_source, self.load_source_file, lambda text: self.status_label.setText(text), self
        )
        for box in (self.source_a, self.source_b):
            self.sources.connect(box)
        self.source_b.index_spin.setValue(1)

        self.t_slider = ranged(QSlider(Qt.Orientation.Horizontal), T_TOOLTIP, 0, 1000, 500)
        self.t_slider.setInvertedAppearance(True)  # left is coarse (large t), right is fine (small t),
        self.t_slider.setInvertedControls(True)  # and the arrow keys move the handle the way they point
        self.t_label = QLabel(toolTip=T_TOOLTIP)
        self.lambda_slider = ranged(
            QSlider(Qt.Orientation.Horizontal), LAMBDA_TOOLTIP, 0, LAMBDA_STEPS, LAMBDA_STEPS // 2
        )
        self.lambda_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.lambda_label = QLabel(toolTip=LAMBDA_TOOLTIP)
        self.columns_spin = ranged(
            QSpinBox(), "How many λ values the strip shows, evenly from 0 (A) to 1 (B).", *spin_range(limits.LAMBDAS), 9
        )
        self.seed_spin = ranged(
            QSpinBox(),
            "Seed of the encoding noise and of the reverse chain's noise, shared by every λ:\n"
            "the same seed replays the same strip.",
            *spin_range(limits.SEED),
            0,
        )
        controls = QGroupBox("Mixing")
        form = QFormLayout(controls)
        for row in (self.t_label, self.t_slider, self.lambda_label, self.lambda_slider):
            form.addRow(row)
        form.addRow("λ columns", self.columns_spin)
        form.addRow("seed", self.seed_spin)
        explanation = QLabel(EXPLANATION)
        explanation.setWordWrap(True)
        form.addRow(explanation)

        self.strip_grid = ImageGrid(max_zoom=16)
        self.strip_grid.set_placeholder("Pick two sources to interpolate between.")
        self.strip_grid.setToolTip("λ from 0 (a reconstruction of A) to 1 (a reconstruction of B); click a column.")
        self.strip_grid.image_clicked.connect(self._on_image_clicked)
        self.focus_grid = ImageGrid(max_zoom=32)
        self.focus_grid.setMinimumSize(200, 200)
        self.focus_grid.setToolTip(LAMBDA_TOOLTIP)
        self.stage_label = QLabel("showing: —")
        self.stage_label.setToolTip(
            "preview: x̂0 from one network evaluation (Eq. 15); settled: a strided chain;\n"
            "exact: the ancestral chain of t steps (Alg. 2), which the progress bar follows."
        )
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(320)  # wide enough for its longest text, with room for the bar's chunk
        self.progress.setMinimumWidth(self.progress.fontMetrics().horizontalAdvance("settled 1000/1000") + 60)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        strip_box = QGroupBox(
            "Strip: λ from A to B (λ = 0 and 1 reconstruct A and B: close at small t, loose at large t)"
        )
        QVBoxLayout(strip_box).addWidget(self.strip_grid)
        focus_box = QGroupBox("Selected λ")
        QVBoxLayout(focus_box).addWidget(self.focus_grid)
        top = QHBoxLayout()  # like a row of Fig. 8: source, reconstruction, mixes, reconstruction, source
        top.addWidget(self.source_a)
        top.addWidget(strip_box, 1)
        top.addWidget(self.source_b)
        middle = QHBoxLayout()
        middle.addWidget(controls, 1)
        middle.addWidget(focus_box, 1)
        status = QHBoxLayout()
        for widget, stretch in ((self.stage_label, 0), (self.progress, 0), (self.status_label, 1)):
            status.addWidget(widget, stretch)
        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        for row, stretch in ((top, 1), (middle, 1), (status, 0)):
            layout.addLayout(row, stretch)

        for control in (self.t_slider, self.lambda_slider, self.columns_spin, self.seed_spin):
            control.valueChanged.connect(lambda _value: self._refresh())
        bridge.model_changed.connect(self._on_model_changed)
        self._on_model_changed(bridge.model)

    # ---- public API ----

    @property
    def lambda_value(self) -> float:
        return self.lambda_slider.value() / LAMBDA_STEPS

    def strip_lambdas(self) -> list[float]:
        """The strip's λ values: linspace(0, 1, columns)."""
        return [float(v) for v in np.linspace(0.0, 1.0, self.columns_spin.value())]

    def set_source(self, which: str, image: np.ndarray, origin: str = "") -> None:
        """Use `image` ([H, W, C] uint8 at the model's size) as source 'A' or 'B'."""
        box = self.source_a if which.upper() == "A" else self.source_b
        box.set_image(image, origin or "image")
        self._refresh()

    def load_source_file(self, which: str, path: str) -> None:
        """Decode an image file with Pillow at the model's size and channels and use it as source 'A' or 'B'."""
        info = self._bridge.model
        if info is None:
            self.status_label.setText("Load a model first: the file is resized to the model's image size.")
            return
        try:
            image = open_source_image(path, tuple(info.image_size), info.channels)
        except Exception as e:  # noqa: BLE001 - any file a person picks (a bomb, a truncated PNG): a line, not a crash
            self.status_label.setText(f"Cannot open {path}: {e}")
            return
        self.set_source(which, image, f"file {Path(path).name}")

    # ---- sources ----

    def _ensure_sources(self) -> None:
        """Defaults on first show: dataset images 0 and 1."""
        if self._bridge.model is not None:
            self.sources.fill_defaults((self.source_a, self.source_b), self._on_defaults_loaded)

    def _on_defaults_loaded(self) -> None:
        self._out_of_date = False  # the model changed while hidden: recompute on the next show

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._ensure_sources()
        if self._out_of_date:
            self._out_of_date = False
            self._refresh()

    # ---- the interpolation job ----

    def _on_model_changed(self, info) -> None:
        if info is None:
            self._refresh()
            return
        T = info.num_timesteps
        if self.t_slider.maximum() != T:  # a new schedule: start in the middle, as Fig. 9's t = 500 of 1000
            self.t_slider.blockSignals(True)
            self.t_slider.setRange(0, T)
            self.t_slider.setPageStep(max(1, T // 10))
            self.t_slider.setValue(T // 2)
            self.t_slider.blockSignals(False)
        shape = (*info.image_size, info.channels)
        for box in (self.source_a, self.source_b):  # sources of another shape cannot be encoded by this model
            if box.image is not None and box.image.shape != shape:
                box.set_image(None)
        self._request_key = None  # new weights: what was shown is stale
        if not self.isVisible():  # an exact chain costs seconds of CPU: only for a strip someone looks at
            self._out_of_date = True
            self._show_labels()
            self.status_label.setText("The model changed: the strip is recomputed when this tab is shown.")
            return
        self._ensure_sources()
        self._refresh()

    def _show_labels(self) -> None:
        info, t = self._bridge.model, self.t_slider.value()
        self.t_label.setText(
            f"mixing step t = {t} / {info.num_timesteps}   —   coarse ◀ ▶ fine"
            if info
            else "mixing step t: load a model first"
        )
        self.lambda_label.setText(f"λ = {lambda_text(self.lambda_value)}   (A ◀ ▶ B)")

    def _refresh(self) -> None:
        """Update the labels and ask for the interpolation the controls describe (if not asked already)."""
        info = self._bridge.model
        t, lam = self.t_slider.value(), self.lambda_value
        self._show_labels()
        self._show_focus()
        a, b = self.source_a.image, self.source_b.image
        if info is None or a is None or b is None:
            return
        grid = self.strip_lambdas()
        lambdas = grid if self._nearest_column(grid, lam)[1] else grid + [lam]
        key = self._strip_key() + (tuple(lambdas),)
        if key == self._request_key:  # λ moved along the strip: nothing new to compute
            return
        self._request_key, self._lambdas, seed = key, lambdas, self.seed_spin.value()
        self._requests.ask(lambda on_value: self._bridge.interpolate(a, b, t, lambdas, seed, on_refined=on_value))

    def _strip_key(self) -> tuple:
        info = self._bridge.model
        return (
            info.source,
            info.step,
            self.source_a.version,
            self.source_b.version,
            self.t_slider.value(),
            self.columns_spin.value(),
            self.seed_spin.value(),
        )

    def _on_failed(self, message: str) -> None:
        self._request_key = None  # asking again may work (a model that loads meanwhile)
        self.status_label.setText(f"Interpolation failed: {message}")

    def _on_refined(self, value) -> None:
        if isinstance(value, Progress):
            self._show_progress(value.stage, value.done, value.total)
            return
        if not isinstance(value, Refined):
            return
        stage = STAGE_NAMES.get(value.stage, value.stage)
        elapsed = self._requests.elapsed
        t = self.t_slider.value()
        self.stage_label.setText(f"showing: {stage}")
        badge = stage_badge(value.stage, value.total)
        self.focus_grid.set_badge(badge)
        if value.next_stage is not None:  # the chain that runs next, as the engine planned it
            self._show_progress(value.next_stage, 0, value.next_total)
        self._shown = (self._lambdas, value.images, t, value.stage)
        columns = self.columns_spin.value()
        strip_key = self._strip_key()
        # Only λ moved off the strip: keep the exact strip on screen while the new λ refines in the large view.
        if value.stage == "exact" or self._exact_strip != strip_key:
            captions = [f"λ={lambda_text(lam)}" for lam in self._lambdas[:columns]]
            captions[0], captions[-1] = "A′ λ=0", "B′ λ=1"
            self.strip_grid.set_images(value.images[:columns], captions, columns=columns)
            self.strip_grid.set_badge(badge)
            self._exact_strip = strip_key if value.stage == "exact" else None
            self.strip_shown.emit(value.stage)
        self._show_focus()
        if value.stage == "exact":
            cached = self._requests.stages == ["exact"] and value.total > 0
            self._show_progress("exact", value.total, value.total)
            self.status_label.setText(
                f"t = {t}: exact chain of {value.total} steps"
                + (" (from the cache)" if cached else f", {elapsed:.2f} s after the change")
            )
            self._publish(value.images[:columns], t, value.model)
        else:
            cost = chain_cost(self._bridge.model, len(self._lambdas), t)
            self.status_label.setText(f"t = {t}: {stage} after {elapsed:.2f} s; the exact chain follows{cost}")

    def _publish(self, images: np.ndarray, t: int, model) -> None:
        """Offer the exact strip to Export, named by the model that computed it (`model`, from the result)."""
        info = self._bridge.model
        self._state.set(
            "interpolation",
            {
                "images": images,
                "metadata": {
                    "figure": "Ho et al. 2020, Figs. 8-9",
                    "t": t,
                    "num_timesteps": info.num_timesteps,
                    "lambdas": self.strip_lambdas(),
                    "seed": self.seed_spin.value(),
                    **info.provenance,
                    **(identity_provenance(model) if model is not None else {}),
                    "source_a": self.source_a.origin_label.text(),
                    "source_b": self.source_b.origin_label.text(),
                },
            },
        )

    # ---- the selected λ ----

    @staticmethod
    def _nearest_column(grid: list[float], lam: float) -> tuple[int, bool]:
        index = int(np.argmin([abs(g - lam) for g in grid]))
        return index, abs(grid[index] - lam) < 1e-6

    def _show_focus(self) -> None:
        """Highlight the strip column nearest λ; show λ itself large (its own image when it is off the strip)."""
        lam = self.lambda_value
        index, _ = self._nearest_column(self.strip_lambdas(), lam)
        self.strip_grid.set_selected(index if index < self.strip_grid.count else None)
        if self._shown is None:
            return
        lambdas, images, t, stage = self._shown
        nearest, exact = self._nearest_column(lambdas, lam)
        shown = lam if exact else lambdas[nearest]
        caption = f"λ = {lambda_text(shown)}, t = {t}"
        if stage == "direct" and 0 < shown < 1:
            # x̂0 (Eq. 15) of a mix of two independently noised latents, whose variance is lower than the network
            # expects at t: it looks like coloured noise until the chain runs. Say so rather than hide it.
            caption += " · preview (one step)"
        self.focus_grid.set_images(images[nearest][None], [caption])

    def _on_image_clicked(self, index: int) -> None:
        grid = self.strip_lambdas()
        if index < len(grid):
            self.lambda_slider.setValue(round(grid[index] * LAMBDA_STEPS))

    def _show_progress(self, stage: str, done: int, total: int) -> None:
        """The progress bar follows the chain running now ("settled 10/25", "exact 340/500")."""
        name = STAGE_NAMES.get(stage, stage)
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done if total else 1)
        self.progress.setFormat(f"{name} %v/%m" if total else name)
