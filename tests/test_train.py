"""Training, checkpoints and runs: exact resume, crash-safe saves, the NaN guard, refusal of bad checkpoints."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from engine import checkpoint as ckpt
from engine.config import LRSchedule, get_preset
from engine.data import load_dataset
from engine.runs import Run, RunError, RunSpec
from engine.train import Trainer, make_adam
from engine.train_events import CheckpointSaved, RolledBack, SamplesReady, StepLogged, StepSkipped, TrainFinished

DATA = "builtin:shapes?size=8&count=64"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


def _spec(**train_changes) -> RunSpec:
    preset = get_preset("micro")
    settings = {"batch_size": 8, "log_every": 2, "sample_every": 1000, "checkpoint_every": 1000}
    train = dataclasses.replace(preset.train, **{**settings, **train_changes})
    return RunSpec(dataclasses.replace(preset.unet, dropout=0.1), preset.diffusion, train, DATA, "micro")


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    state |= {f"ema.{k}": v.clone() for k, v in trainer.ema.state_dict().items()}
    return state


def test_resume_is_bit_exact(tmp_path, dataset):
    """N steps straight == N/2 steps, a new process-like Trainer from the checkpoint, N/2 more (bitwise, CPU)."""
    straight = Trainer(Run.create(tmp_path / "a", _spec()), dataset=dataset)
    list(straight.run(10))

    first = Trainer(Run.create(tmp_path / "b", _spec()), dataset=dataset)
    events = list(first.run(5))
    assert isinstance(events[-1], TrainFinished) and events[-1].step == 5
    second = Trainer(Run.open(tmp_path / "b"), dataset=dataset)
    assert second.resume() == [] and second.step == 5 and second.resumed_from == 5
    list(second.run(10))

    a, b = _weights(straight), _weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    # The optimiser state too.
    sa, sb = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_training_reduces_the_loss_and_logs_metrics(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec(learning_rate=2e-3))
    events = list(Trainer(run, dataset=dataset).run(30))
    logs = [e for e in events if isinstance(e, StepLogged)]
    assert [e.step for e in logs] == list(range(2, 31, 2))
    assert sum(e.loss for e in logs[-3:]) < sum(e.loss for e in logs[:3])
    assert all(e.lr <= 2e-3 and e.images_per_s > 0 for e in logs)
    assert logs[0].lr == pytest.approx(2e-3 * 2 / 10)  # linear warmup over 10 steps
    records, offset = run.read_metrics()
    assert [r["step"] for r in records] == [e.step for e in logs] and offset == run.metrics_path.stat().st_size
    assert len(records[0]["loss_q"]) == 4


def test_samples_and_checkpoints_on_schedule(tmp_path, dataset):
    spec = _spec()
    spec = dataclasses.replace(
        spec,
        train=dataclasses.replace(
            spec.train, sample_every=4, checkpoint_every=4, keep_checkpoints=2, sample_count=4, sample_steps=5
        ),
    )
    run = Run.create(tmp_path / "r", spec)
    events = list(Trainer(run, dataset=dataset).run(9))
    grids = [e for e in events if isinstance(e, SamplesReady)]
    assert [g.step for g in grids] == [4, 8]
    assert grids[0].ema.shape == grids[0].raw.shape == (4, 8, 8, 3) and grids[0].ema.dtype.name == "uint8"
    assert Path(grids[0].path).exists()
    saved = [e.step for e in events if isinstance(e, CheckpointSaved)]
    assert saved == [0, 4, 8, 9]
    assert [p.name for p in ckpt.list_checkpoints(run.checkpoints_dir)] == ["step_0000008.json", "step_0000009.json"]


def test_stop_is_cooperative_and_saves(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    trainer = Trainer(run, dataset=dataset)
    events = list(trainer.run(100, stop=lambda: trainer.step >= 3))
    assert isinstance(events[-1], TrainFinished) and events[-1].reason == "stopped" and events[-1].step == 3
    assert isinstance(events[-2], CheckpointSaved) and events[-2].step == 3
    assert ckpt.latest_checkpoint(run.checkpoints_dir)[0].step == 3


def test_a_crash_mid_save_leaves_the_previous_checkpoint(tmp_path, dataset, monkeypatch):
    """Killing the process while a checkpoint is written (here: the write raises half-way) loses nothing."""
    run = Run.create(tmp_path / "r", _spec())
    trainer = Trainer(run, dataset=dataset)
    list(trainer.run(2))
    good = ckpt.latest_checkpoint(run.checkpoints_dir)[0]

    real_replace = os.replace

    def crash_on_weights(src, dst):
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt("killed mid-save")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_weights)
    trainer.step = 4
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert not any(p.name.endswith(".tmp") for p in run.checkpoints_dir.iterdir())
    found, problems = ckpt.latest_checkpoint(run.checkpoints_dir)
    assert found.step == good.step == 2 and problems == []

    # Weights written but killed before the metadata: the half checkpoint is passed over too.
    trainer.step = 6
    weights, meta = ckpt.checkpoint_paths(run.checkpoints_dir, 6)
    monkeypatch.setattr(
        os,
        "replace",
        lambda s, d: (_ for _ in ()).throw(KeyboardInterrupt()) if str(d).endswith(".json") else real_replace(s, d),
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert weights.exists() and not meta.exists()
    assert ckpt.latest_checkpoint(run.checkpoints_dir)[0].step == 2


def test_damaged_checkpoints_are_refused_with_the_reason(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    trainer = Trainer(run, dataset=dataset)
    list(trainer.run(2))
    weights, meta = ckpt.checkpoint_paths(run.checkpoints_dir, 2)

    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.load_checkpoint(meta)
    found, problems = ckpt.latest_checkpoint(run.checkpoints_dir)
    assert found.step == 0 and "checksum" in problems[0]  # falls back to the older one and says why

    meta.write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(meta)
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ckpt.CheckpointError, match="not a DDPM Studio checkpoint"):
        ckpt.load_checkpoint(meta)
    _, older = ckpt.checkpoint_paths(run.checkpoints_dir, 0)
    record = json.loads(older.read_text())
    older.write_text(json.dumps(record | {"version": 1}))  # written before the downsampling padding changed
    with pytest.raises(ckpt.CheckpointError, match="version 1 is not supported.*padding"):
        ckpt.load_checkpoint(older)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    list(Trainer(run, dataset=dataset).run(1))
    found, _ = ckpt.latest_checkpoint(run.checkpoints_dir)
    from engine.unet import UNet

    wider = UNet(dataclasses.replace(get_preset("micro").unet, base_channels=32))
    with pytest.raises(ckpt.CheckpointError, match="do not fit"):
        ckpt.check_state_dict(wider, found.group("model"), "model")


def test_non_finite_steps_are_skipped_then_rolled_back(tmp_path, dataset, monkeypatch):
    """A NaN loss skips the step without touching the weights; three in a row roll back to the last checkpoint."""
    run = Run.create(tmp_path / "r", _spec(nonfinite_patience=3))
    trainer = Trainer(run, dataset=dataset)
    list(trainer.run(4))
    before = _weights(trainer)

    real = trainer.diffusion.training_losses
    poisoned = {"left": 3}

    def nan_losses(*args, **kwargs):
        losses = real(*args, **kwargs)
        if poisoned["left"] > 0:
            poisoned["left"] -= 1
            return losses * float("nan")
        return losses

    monkeypatch.setattr(trainer.diffusion, "training_losses", nan_losses)
    events = list(trainer.run(6))
    skipped = [e for e in events if isinstance(e, StepSkipped)]
    rolled = [e for e in events if isinstance(e, RolledBack)]
    assert len(skipped) == 3 and "non-finite loss" in skipped[0].reason
    assert len(rolled) == 1 and rolled[0].to_step == 4
    assert isinstance(events[-1], TrainFinished) and events[-1].step == 6
    assert all(torch.isfinite(v).all() for v in _weights(trainer).values())
    assert trainer.rollbacks == 1 and before.keys() == _weights(trainer).keys()


def test_run_directory_round_trip_and_refusals(tmp_path):
    spec = _spec()
    run = Run.create(tmp_path / "r", spec)
    assert Run.open(tmp_path / "r").spec == spec
    assert json.loads((tmp_path / "r" / "run.json").read_text())["versions"]["torch"] == torch.__version__
    with pytest.raises(RunError, match="already holds a run"):
        Run.create(tmp_path / "r", spec)
    with pytest.raises(RunError, match="not a run directory"):
        Run.open(tmp_path)
    # A line still being written is not returned until it is complete.
    run.append_metrics({"step": 1, "loss": 0.5})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 2, "lo')
    records, offset = run.read_metrics()
    assert [r["step"] for r in records] == [1]
    with open(run.metrics_path, "a") as f:
        f.write('ss": 0.4}\n')
    more, _ = run.read_metrics(offset)
    assert [r["step"] for r in more] == [2]


def test_resuming_on_changed_data_says_so(tmp_path, dataset):
    """The checkpoint remembers how many images its data position counts; a resume on other data warns."""
    run = Run.create(tmp_path / "r", _spec())
    list(Trainer(run, dataset=dataset).run(2))
    smaller = load_dataset("builtin:shapes?size=8&count=32")
    trainer = Trainer(Run.open(tmp_path / "r"), dataset=smaller)
    trainer.resume()
    started = next(trainer.run(3))
    assert "had 64 images" in started.warnings[0] and "has 32 now" in started.warnings[0]


def test_learning_rate_warms_up_then_stays_or_follows_a_half_cosine(tmp_path, dataset):
    """Appendix B: linear warmup to the peak, then constant; the cosine option decays to 0 at total_steps."""
    from engine.config import LRSchedule

    constant = Trainer(
        Run.create(tmp_path / "c", _spec(learning_rate=1e-3, warmup_steps=10, total_steps=110)), "cpu", dataset
    )
    assert constant.learning_rate(0) == pytest.approx(1e-4)  # step 0 trains at 1/10 of the peak
    assert constant.learning_rate(9) == pytest.approx(1e-3)
    assert constant.learning_rate(109) == pytest.approx(1e-3)
    cosine = Trainer(
        Run.create(
            tmp_path / "k", _spec(learning_rate=1e-3, warmup_steps=10, total_steps=110, lr_schedule=LRSchedule.COSINE)
        ),
        "cpu",
        dataset,
    )
    assert cosine.learning_rate(4) == pytest.approx(constant.learning_rate(4))  # the same warmup
    assert cosine.learning_rate(10) == pytest.approx(1e-3)
    assert cosine.learning_rate(60) == pytest.approx(0.5e-3)  # halfway through the decay: half the peak
    assert cosine.learning_rate(110) == pytest.approx(0.0, abs=1e-12)
    assert cosine.learning_rate(500) == pytest.approx(0.0, abs=1e-12)  # past the end it stays at 0


# ---- resuming: a longer plan, the loss window, leftovers, one writer ----


def test_training_a_finished_cosine_run_further_replans_the_decay(tmp_path, dataset):
    """`train --steps 20` then `--steps 40` on a cosine run: steps 21-40 learn (lr > 0), run.json says so."""
    spec = _spec(lr_schedule=LRSchedule.COSINE, warmup_steps=2, total_steps=20, log_every=1)
    first = Trainer(Run.create(tmp_path / "r", spec), dataset=dataset)
    logged = [e for e in first.run(20) if isinstance(e, StepLogged)]
    assert logged[-1].step == 20 and first.learning_rate(20) == 0.0  # what step 21 would learn at, unplanned

    second = Trainer(Run.open(tmp_path / "r"), dataset=dataset)
    second.resume()
    events = list(second.run(40))
    started = events[0]
    assert any("cosine learning-rate decay now ends at step 40" in w for w in started.warnings), started.warnings
    lrs = {e.step: e.lr for e in events if isinstance(e, StepLogged)}
    assert lrs[21] == pytest.approx(second.learning_rate(20)) and lrs[21] > 0.4 * spec.train.learning_rate
    assert lrs[40] < 0.01 * spec.train.learning_rate and all(lrs[s] >= lrs[s + 1] for s in range(21, 40))
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["train"]["total_steps"] == 40
    assert [(h["at_step"], h["total_steps"]) for h in record["history"]] == [(20, [20, 40])]
    assert Run.open(tmp_path / "r").spec.train.total_steps == 40  # a later resume keeps the new plan


def test_stopping_and_resuming_to_the_same_total_is_bit_exact_and_logs_the_same_losses(tmp_path, dataset):
    """A cosine run stopped at step 6 and resumed to its planned 10 equals one run of 10: weights bitwise, and
    every logged loss (overall and by t-quartile), since the loss window travels in the checkpoint."""
    spec = _spec(lr_schedule=LRSchedule.COSINE, warmup_steps=2, total_steps=10, log_every=4)
    straight = Trainer(Run.create(tmp_path / "a", spec), dataset=dataset)
    list(straight.run())

    first = Trainer(Run.create(tmp_path / "b", spec), dataset=dataset)
    assert list(first.run(stop=lambda: first.step >= 6))[-1] == TrainFinished(6, "stopped")
    second = Trainer(Run.open(tmp_path / "b"), dataset=dataset)
    assert second.resume() == [] and second.step == 6
    assert not any("plan changes" in w for w in next(second.run()).warnings)  # nothing re-planned
    list(second.run())

    a, b = _weights(straight), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    mine = Run.open(tmp_path / "b").read_all_metrics()
    theirs = Run.open(tmp_path / "a").read_all_metrics()
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [4, 8, 10]
    assert [(r["loss"], r["loss_q"], r["lr"]) for r in mine] == [(r["loss"], r["loss_q"], r["lr"]) for r in theirs]


def test_leftovers_of_interrupted_saves_are_removed_when_training_starts(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    leftovers = [
        run.checkpoints_dir / ".step_0000005.safetensors.k2j4h6g8.tmp",
        run.checkpoints_dir / ".step_0000005.json.a1b2c3d4.tmp",
        run.root / ".metrics.jsonl.zz99yy88.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"\0" * 4096)
    kept = run.checkpoints_dir / "notes.tmp"  # not one of ours: left alone
    kept.write_text("mine")
    events = list(Trainer(run, dataset=dataset).run(1))
    assert any("removed 3 temporary file(s) of interrupted saves" in w for w in events[0].warnings)
    assert not any(p.exists() for p in leftovers) and kept.exists()


def test_a_second_trainer_of_a_run_in_training_is_refused(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    stream = Trainer(run, dataset=dataset).run(3)
    next(stream)  # the first trainer holds the run now
    with pytest.raises(RunError, match="being trained by another process"):
        next(Trainer(Run.open(tmp_path / "r"), dataset=dataset).run(3))
    list(stream)  # and finishes; then the run is free again
    assert list(Trainer(Run.open(tmp_path / "r"), dataset=dataset).run(4))[-1].step == 4


def test_a_checkpoint_whose_training_state_is_damaged_is_passed_over_and_changes_nothing(tmp_path, dataset):
    run = Run.create(tmp_path / "r", _spec())
    list(Trainer(run, dataset=dataset).run(3))  # checkpoints at steps 0 and 3
    newest = ckpt.list_checkpoints(run.checkpoints_dir)[-1]
    record = json.loads(newest.read_text())
    record["data_position"] = {"epoch": -1, "index": "x"}
    newest.write_text(json.dumps(record))
    again = Trainer(Run.open(tmp_path / "r"), dataset=dataset)
    problems = again.resume()
    assert again.step == 0 and len(problems) == 1 and "training state is unreadable" in problems[0]


def test_time_the_consumer_spends_between_events_is_not_training_time(tmp_path, dataset):
    """The studio serves sliders between training events: that time must not lower the logged images/s nor stretch
    the ETA. A consumer that dawdles 0.2 s after every step sees the same throughput as one that does not."""
    import time

    run = Run.create(tmp_path / "r", _spec(log_every=4))
    rates = []
    for event in Trainer(run, dataset=dataset).run(8):
        if isinstance(event, StepLogged):
            rates.append(event.images_per_s)
        time.sleep(0.2)  # what a busy GUI thread would cost a wall clock
    wall_rate = 8 * 4 / (4 * 0.2)  # images per second if the pauses counted: 40
    assert len(rates) == 2 and min(rates) > 3 * wall_rate, rates


def test_the_fused_adam_makes_torchs_reference_update_to_rounding():
    """make_adam (torch's fused kernel on a CPU) updates as torch's per-op Adam does, to float rounding."""
    torch.manual_seed(0)
    fused_params = [torch.randn(64, 32, requires_grad=True), torch.randn(32, requires_grad=True)]
    plain_params = [p.detach().clone().requires_grad_(True) for p in fused_params]
    initial = [p.detach().clone() for p in fused_params]
    fused = make_adam(fused_params, 2e-4, torch.device("cpu"))
    plain = torch.optim.Adam(plain_params, lr=2e-4, foreach=False)
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(p) for p in fused_params]
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b, before in zip(fused_params, plain_params, initial):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
        assert (a - before).abs().max() > 1e-4  # five steps of 2e-4 moved them


def test_a_checkpoint_saved_under_another_adam_kernel_resumes_exactly(tmp_path, dataset):
    """Checkpoints written before the fused optimiser (their groups say fused: null, as the bundled model's do)
    resume onto the fused kernel and go on as a run that never stopped."""
    straight = Trainer(Run.create(tmp_path / "a", _spec()), dataset=dataset)
    list(straight.run(6))
    first = Trainer(Run.create(tmp_path / "b", _spec()), dataset=dataset)
    list(first.run(3))
    _, meta = ckpt.checkpoint_paths(first.run_dir.checkpoints_dir, 3)
    record = json.loads(meta.read_text())
    assert record["optimizer"]["param_groups"][0]["fused"] is True
    record["optimizer"]["param_groups"][0] |= {"fused": None, "foreach": None}
    meta.write_text(json.dumps(record))

    second = Trainer(Run.open(tmp_path / "b"), dataset=dataset)
    assert second.resume() == [] and second.step == 3
    assert second.optimizer.param_groups[0]["fused"] is True
    list(second.run(6))
    a, b = _weights(straight), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
