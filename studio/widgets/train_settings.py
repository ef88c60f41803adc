"""The training recipe as the Training panel edits it: a form of the editable TrainConfig fields, and the list of every
setting that differs from the paper's CIFAR-10 run (Ho et al. 2020, Sec. 4 and Appendix B).

Values cross in the JSON form that `to_jsonable` gives and run.json stores, so the same code fills the form from a
preset or from a run written elsewhere, and compares either with the paper.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QListWidget, QSpinBox, QWidget

from studio.bridge import PRESETS, Precision, limits, spin_range, to_jsonable
from studio.widgets.plots import short_number

PAPER = PRESETS["cifar10"]  # Ho et al. 2020's CIFAR-10 recipe: every difference is shown against it
_COMPARED = {  # config group -> (field, how the list names it)
    "unet": (
        ("image_size", "image size"),
        ("in_channels", "channels"),
        ("base_channels", "width"),
        ("channel_mults", "channel multipliers"),
        ("num_res_blocks", "res blocks"),
        ("attention_resolutions", "attention at"),
        ("dropout", "dropout"),
    ),
    "diffusion": (
        ("num_timesteps", "T"),
        ("schedule", "schedule"),
        ("beta_start", "β_1"),
        ("beta_end", "β_T"),
        ("variance", "σ_t²"),
        ("loss", "loss"),
        ("snr_gamma", "min-SNR γ"),
    ),
    "train": (
        ("batch_size", "batch"),
        ("learning_rate", "lr"),
        ("warmup_steps", "warmup"),
        ("lr_schedule", "lr schedule"),
        ("grad_clip", "clip"),
        ("ema_decay", "EMA decay"),
        ("ema_warmup", "EMA warmup"),
        ("hflip", "flips"),
        ("precision", "precision"),
        ("total_steps", "steps"),
    ),
}

# The editable TrainConfig fields: (widget attribute, label, field, tooltip). One table builds the form, fills it from
# a preset or a run.json, and reads it back into TrainConfig fields.
SETTINGS = (
    ("steps_spin", "Steps", "total_steps", "Train until this step (the paper: 800,000 for CIFAR-10)"),
    ("batch_spin", "Batch size", "batch_size", "Images per optimiser step (the paper: 128)"),
    (
        "lr_spin",
        "Learning rate",
        "learning_rate",
        "Adam's rate after warmup (the paper: 2e-4); ↑/↓ double and halve it",
    ),
    ("warmup_spin", "Warmup steps", "warmup_steps", "Linear learning-rate warmup (the paper: 5,000 steps)"),
    (
        "ema_spin",
        "EMA decay",
        "ema_decay",
        "Decay of the moving average of the weights that sampling uses (paper: 0.9999)",
    ),
    (
        "precision_combo",
        "Precision",
        "precision",
        "fp32, bf16 autocast, or auto: bf16 where the device runs it natively",
    ),
    (
        "flips_combo",
        "Flips",
        "hflip",
        "Random horizontal flips (the paper's, for CIFAR-10). By the data: on for CIFAR-10 and the built-in shapes,\n"
        "off for a folder or MNIST, where a mirrored digit or letter is not a valid sample; turn them on for photos",
    ),
    ("seed_spin", "Seed", "seed", "Seeds the initial weights, the data order and each step's t and ε: a run replays"),
    ("sample_every_spin", "Sample every", "sample_every", "Steps between the EMA and raw sample grids"),
    ("checkpoint_every_spin", "Checkpoint every", "checkpoint_every", "Steps between checkpoints"),
)


FLIPS = {"by the data": None, "on": True, "off": False}  # the Flips editor's choices: None leaves it to the data


def show_value(value, name: str = "") -> str:
    """Settings as the paper writes them: 1e-3, 800,000, 32×32, on/off (values as `to_jsonable` gives them)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ("×" if name == "image_size" else ", ").join(map(str, value))
    return f"{value:,}" if isinstance(value, int) else short_number(value) if isinstance(value, float) else str(value)


def paper_differences(configs: dict[str, dict]) -> list[str]:
    """ "lr 1e-3 (paper 2e-4)" for each compared setting of {"unet": ..., "diffusion": ..., "train": ...} (JSON form,
    as run.json stores them) that differs from the paper's CIFAR-10 run."""
    lines = []
    for group, fields in _COMPARED.items():
        paper = to_jsonable(getattr(PAPER, group))
        for name, label in fields:
            ours = configs.get(group, {}).get(name, paper[name])
            if ours != paper[name]:
                lines.append(f"{label} {show_value(ours, name)} (paper {show_value(paper[name], name)})")
    return lines


class CompactSpinBox(QDoubleSpinBox):
    """Shows 2e-4 and 0.999 (no trailing zeros); with `geometric`, the arrows halve and double (learning rates)."""

    def __init__(self, low: float, high: float, step: float = 0.0, geometric: bool = False):
        self.geometric = geometric
        super().__init__()
        self.setDecimals(10)
        self.setRange(low, high)
        self.setSingleStep(step)

    def textFromValue(self, value: float) -> str:
        return short_number(float(value)) if self.geometric else f"{value:.6g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        try:
            ok = self.minimum() <= float(text) <= self.maximum()
        except ValueError:
            ok = False
        return QValidator.State.Acceptable if ok else QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:
        self.setValue(self.value() * 2.0**steps) if self.geometric else super().stepBy(steps)


def setting_widget(name: str) -> QWidget:
    """The editor of one TrainConfig field."""
    if name in ("precision", "hflip"):
        combo = QComboBox()
        combo.addItems([p.value for p in Precision] if name == "precision" else list(FLIPS))
        return combo
    if name == "learning_rate":  # the ranges are the engine's (engine/limits.py), as the command line checks them
        return CompactSpinBox(limits.LEARNING_RATE.low, limits.LEARNING_RATE.high, geometric=True)
    if name == "ema_decay":
        return CompactSpinBox(limits.EMA_DECAY.low, limits.EMA_DECAY.high, 1e-4)
    spin = QSpinBox()
    ranged = {"total_steps": limits.TRAIN_STEPS, "batch_size": limits.BATCH_SIZE, "seed": limits.SEED}
    spin.setRange(*spin_range(ranged[name]) if name in ranged else (0 if name == "warmup_steps" else 1, 2**31 - 1))
    spin.setGroupSeparatorShown(name != "seed")
    return spin


class TrainSettingsForm(QGroupBox):
    """The SETTINGS fields as a form; each editor is also an attribute named as in SETTINGS (`steps_spin`, ...).
    `settings_changed` whenever any of them changes."""

    settings_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Settings", parent)
        form = QFormLayout(self)
        self.editors: dict[str, QWidget] = {}  # TrainConfig field -> its editor
        for attribute, label, name, tip in SETTINGS:
            editor = setting_widget(name)
            editor.setToolTip(tip)
            editor.setMinimumHeight(editor.sizeHint().height())  # never squashed until the digits are clipped
            form.addRow(label, editor)
            setattr(self, attribute, editor)
            self.editors[name] = editor
            changed = editor.currentIndexChanged if isinstance(editor, QComboBox) else editor.valueChanged
            changed.connect(self.settings_changed)

    def show_train(self, train: dict, run: bool = False) -> None:
        """Fill the form from a TrainConfig in JSON form: a preset's (flips left to the data), or a `run`'s."""
        for name, editor in self.editors.items():
            if name == "hflip":
                editor.setCurrentText(("on" if train[name] else "off") if run else "by the data")
            elif name == "precision":
                editor.setCurrentText(train[name])
            else:
                editor.setValue(train[name])

    def values(self) -> dict:
        """{TrainConfig field: value} of the form, ready for `dataclasses.replace(train, **values)` (flips only where
        chosen: else RunSpec.for_data decides by the data)."""
        values = {}
        for name, editor in self.editors.items():
            if name == "hflip":
                if FLIPS[editor.currentText()] is not None:
                    values[name] = FLIPS[editor.currentText()]
            else:
                values[name] = Precision(editor.currentText()) if name == "precision" else editor.value()
        return values


class PaperDifferences(QListWidget):
    """One line per setting that differs from the paper's CIFAR-10 run, e.g. "lr 1e-3 (paper 2e-4)"."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip("Settings that differ from Ho et al. 2020's CIFAR-10 run (Sec. 4, Appendix B)")

    def show_configs(self, configs: dict[str, dict]) -> None:
        """Compare {"unet": ..., "diffusion": ..., "train": ...} (JSON form) with the paper."""
        self.show_lines(paper_differences(configs) or ["nothing: this is the paper's recipe"])

    def show_lines(self, lines: list[str]) -> None:
        self.clear()
        self.addItems(lines)
