"""The Training panel's following of a run that another process writes (`ddpm train`, a multi-GPU job under
torchrun): its settings, then its metrics, newest sample grid and checkpoints every FOLLOW_INTERVAL_MS, and a word in
the status bar when it saves a checkpoint newer than the model being explored. A part of `TrainingPanel`, whose
widgets it fills."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog

from studio.bridge import PRESETS, MetricsFollower, read_run_record, step_files
from studio.widgets.run_controls import BUSY_STATES, runs_folder

FOLLOW_INTERVAL_MS = 2000
FOLLOWED_RAW_PLACEHOLDER = (
    "Raw-weight grids appear while the studio trains;\na run written elsewhere saves EMA grids only."
)


def run_timesteps(run_dir: Path) -> int | None:
    """The run's T from its run.json, None if it cannot be read."""
    try:
        return int(read_run_record(run_dir)["diffusion"]["num_timesteps"])
    except (ValueError, KeyError, TypeError):  # RunError is a ValueError
        return None


class RunFollowing:
    """Following a run folder, for `TrainingPanel`, which owns the widgets it fills."""

    def _init_following(self) -> None:
        self._tail: MetricsFollower | None = None  # while following
        self._hinted_step = 0  # the newest checkpoint of a followed run already offered in the status bar
        self.follow_timer = QTimer(self)
        self.follow_timer.setInterval(FOLLOW_INTERVAL_MS)
        self.follow_timer.timeout.connect(self.poll_followed_run)

    def _on_follow_clicked(self) -> None:
        if self.training_state == "following":
            return self.stop_following()
        current = self.state.get("run_dir") or self.run_dir  # the run opened or trained last
        start = next(
            (p for p in (Path(current) if current else None, runs_folder()) if p is not None and p.is_dir()),
            Path.home(),
        )
        path = QFileDialog.getExistingDirectory(self, "Follow a run folder", str(start.resolve()))
        if path:
            self.follow(path)

    def follow(self, run_dir: str) -> bool:
        """Show `run_dir`'s settings and watch its metrics, samples and checkpoints every 2 s; False if the folder
        is not a run (or the studio is training a run of its own)."""
        if self.training_state in BUSY_STATES and self.training_state != "following":
            self._error(f"Cannot follow {run_dir} while training: stop the run first.")
            return False
        self.stop_following()  # following another run: its settings give way to the new one's
        root = Path(run_dir)
        try:
            record = read_run_record(root)
            total, batch = int(record["train"]["total_steps"]), int(record["train"]["batch_size"])
        except (ValueError, KeyError, TypeError) as e:  # RunError is a ValueError
            self._error(f"{run_dir} is not a run folder: {e}")
            return False
        if record.get("preset") in PRESETS:
            self.preset_combo.setCurrentText(record["preset"])
        self._set_state("following")
        self._show_train_config(record["train"], run=True)
        self._show_differences(record=record)
        self.curves.set_timesteps(run_timesteps(root))
        self.run_controls.set_run_dir(str(root))
        self._reset_view(FOLLOWED_RAW_PLACEHOLDER)
        self.run_dir, self._total_steps, self._batch_size = str(root), total, batch
        self._tail = MetricsFollower(root / "metrics.jsonl")
        self._hinted_step = 0
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(0)
        self.status_label.setText(
            f"Following {root} (preset {record.get('preset') or 'custom'}, "
            f"data {record.get('data')}); refreshed every {FOLLOW_INTERVAL_MS // 1000} s."
        )
        self.state.set("run_dir", str(root))
        self.poll_followed_run()
        self.follow_timer.start()
        return True

    def stop_following(self) -> None:
        if self.training_state == "following":
            self.follow_timer.stop()
            self._tail = None
            self._set_state("idle")
            self._show_differences()

    def poll_followed_run(self) -> None:
        """Show what the followed run wrote since the last poll: metrics, the newest sample grid, checkpoints."""
        if self._tail is None:
            return
        records, restarted = self._tail.read()
        if restarted:
            self.curves.clear()
        step = self.curves.show_records(records, self._total_steps, self._batch_size)
        if step is not None:
            self.progress_bar.setValue(min(step, self._total_steps))
        self.outputs.show_run_samples(Path(self.run_dir))
        self.checkpoint_list.list_checkpoints(Path(self.run_dir))
        self._hint_newer_checkpoint()

    def _hint_newer_checkpoint(self) -> None:
        """Say in the status bar when the followed run has saved a newer checkpoint than the loaded model of the same
        run (once per checkpoint). Never reload it on its own: that would clear whatever is being explored."""
        model, run = self.bridge.model, Path(self.run_dir)
        checkpoints = step_files(run / "checkpoints", "json")
        if model is None or not checkpoints:
            return
        try:
            same_run = Path(model.source).resolve().parent.parent == run.resolve()
        except OSError:
            return
        newest = checkpoints[-1][0]
        if same_run and newest > model.step and newest > self._hinted_step:
            self._hinted_step = newest
            self.state.set(
                "status", f"step {newest:,} is available: double-click it in Training > Checkpoints to load it"
            )
