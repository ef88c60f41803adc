"""Distributed training is the same computation as one process with the same global batch: each process takes its
contiguous shard of every batch, DDP averages the gradients, and only rank 0 writes the run directory.

The multi-process tests launch 2 CPU processes (gloo) with torch's own launcher, as a user would with torchrun. This
module is also the launched script of one of them (`python -m tests.test_distributed OUT`, see `_worker`).
"""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import checkpoint as ckpt
from engine import distributed
from engine.config import get_preset
from engine.data import LoadOptions, batches, load_dataset, parse_data_spec
from engine.runs import Run, RunSpec
from engine.train_events import RolledBack
from tests import data_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]
DATA = "builtin:shapes?size=8&count=64"


def _launch(args: list[str], timeout: float = 150.0) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ARGS` on the CPU (a free port is found by the launcher). The
    workers meet at 127.0.0.1: by default torchrun hands them the machine's host name, and where that does not
    resolve (a fresh container, a chroot) they wait forever."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr", "127.0.0.1"]
    command += ["--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the launcher passes it on to the workers (each in its own session) and reaps them.
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the distributed run hung (> {timeout:.0f} s):\n{out[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- sharding: the shards of every batch are the global batch ----


def test_the_shards_of_each_batch_concatenate_to_the_one_process_batch():
    """For 2 and 4 shards, over batches that straddle epochs, with flips: shard 0 ++ shard 1 ++ ... == the batch."""
    dataset = load_dataset("builtin:shapes?size=8&count=20")
    whole = batches(dataset, 8, torch.Generator().manual_seed(3), hflip=True)
    expected = [next(whole) for _ in range(6)]  # 48 images of a 20-image dataset: three epochs
    for count in (2, 4):
        shards = [
            batches(dataset, 8, torch.Generator().manual_seed(3), hflip=True, shard=k, num_shards=count)
            for k in range(count)
        ]
        for batch in expected:
            parts = [next(s) for s in shards]
            assert all(p.shape == (8 // count, 3, 8, 8) for p in parts)
            assert torch.equal(torch.cat(parts), batch)
        assert all(s.position == whole.position for s in shards)  # the global position, the same on every process
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        batches(dataset, 7, torch.Generator(), shard=1, num_shards=2)


def test_a_streamed_shard_decodes_only_its_own_images(tmp_path):
    """Each process decodes its shard's files and no others: of two shards, only the one holding a broken file
    meets it (`kept` says where), and the shorter shard does not make the processes take different batches."""
    for i in range(8):
        Image.fromarray(np.full((4, 4, 3), i * 30, np.uint8)).save(tmp_path / f"{i}.png")
    fx.write_truncated_png(tmp_path / "3.png", size=4)  # its header reads as a 4x4 PNG; its pixels do not
    spec = parse_data_spec(str(tmp_path), image_size=(4, 4))
    seen = []
    for k in range(2):
        dataset = load_dataset(spec, options=LoadOptions(memory_limit_bytes=10, workers=1, prefetch_batches=1))
        assert not dataset.in_memory
        stream = batches(dataset, 8, torch.Generator().manual_seed(0), hflip=False, shard=k, num_shards=2)
        x, kept = stream.next_with_kept()
        stream.close()  # before the read-ahead starts on the next batch
        assert kept.shape == (4,) and x.shape == (int(kept.sum()), 3, 4, 4)
        seen.append((int(kept.sum()), [Path(f.path).name for f in dataset.stream_skipped]))
    assert sorted(seen) == [(3, ["3.png"]), (4, [])]


def test_a_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(ValueError, match="batch size 6 is the global batch.*4 processes: choose a multiple of 4"):
        distributed.shard_size(6)
    assert distributed.shard_size(8) == 2


# ---- 2 processes == 1 process ----


def test_torchrun_with_two_processes_trains_what_one_process_does(tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m engine train` on the micro preset, 6 steps at a global batch of 8, ends with
    the weights of one process's run of the same spec; rank 0 alone writes one metrics line per logged step."""
    from engine.__main__ import main

    options = [
        "--data",
        DATA,
        "--preset",
        "micro",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    two = _launch(["-m", "engine", "train", *options, "--run-dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stdout[-3000:]
    assert "x 2 processes" in two.stdout and two.stdout.count("done at step 6") == 1  # rank 0 talks, rank 1 does not
    assert main(["train", *options, "--run", str(tmp_path / "one")]) == 0
    capsys.readouterr()

    one_run, two_run = Run.open(tmp_path / "one"), Run.open(tmp_path / "two")
    assert two_run.spec == one_run.spec
    one, _ = ckpt.latest_checkpoint(one_run.checkpoints_dir)
    two, problems = ckpt.latest_checkpoint(two_run.checkpoints_dir)
    assert problems == [] and two.step == one.step == 6
    assert [p.stem for p in ckpt.list_checkpoints(two_run.checkpoints_dir)] == ["step_0000000", "step_0000006"]
    assert two.metadata["data_position"] == one.metadata["data_position"] == {"epoch": 0, "index": 48}
    assert two.tensors.keys() == one.tensors.keys()
    weights = [k for k in one.tensors if k.startswith(("model.", "ema."))]
    worst = max(float((one.tensors[k] - two.tensors[k]).abs().max()) for k in weights)
    assert worst < 1e-5, worst  # the same updates, up to the order of float sums

    records, _ = two_run.read_metrics()
    reference, _ = one_run.read_metrics()
    assert [r["step"] for r in records] == [r["step"] for r in reference] == [5, 6]  # one line per logged step
    for mine, theirs in zip(records, reference):  # the logged loss describes the global batch
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        # a t-quartile with no sample in the window logs None: it must be None in both runs
        assert [q is None for q in mine["loss_q"]] == [q is None for q in theirs["loss_q"]]
        assert [q for q in mine["loss_q"] if q is not None] == pytest.approx(
            [q for q in theirs["loss_q"] if q is not None], rel=1e-5
        )
        assert mine["lr"] == theirs["lr"] and mine["img_per_s"] > 0

    from engine.loading import load_model

    loaded = load_model(tmp_path / "two")
    assert loaded.step == 6


def _describe(event) -> str:
    if isinstance(event, RolledBack):
        return f"RolledBack {event.from_step}->{event.to_step}"
    return f"{type(event).__name__} {event.step} {getattr(event, 'reason', '')}".strip()


def _worker(out: Path) -> None:
    """Run by `test_skip_rollback_stop_and_resume_agree_across_processes` in each of 2 processes."""
    from engine.train import Trainer
    from engine.train_events import SamplesReady

    distributed.init_from_env("cpu")
    rank = distributed.rank()
    preset = get_preset("micro")
    train = dataclasses.replace(
        preset.train,
        batch_size=8,
        log_every=2,
        sample_every=2,
        checkpoint_every=2,
        sample_count=4,
        sample_steps=5,
        nonfinite_patience=2,
    )
    run_dir = out / "run"
    if rank == 0:
        Run.create(run_dir, RunSpec(preset.unet, preset.diffusion, train, DATA, "micro"))
    distributed.barrier()
    dataset = load_dataset(DATA)
    trainer = Trainer(Run.open(run_dir), device="cpu", dataset=dataset)

    # Rank 1 alone: a NaN loss on its shard twice at step 3 (patience 2: a rollback), then a stop request at step 4.
    real = trainer.diffusion.training_losses
    poisoned = {"left": 2 if rank == 1 else 0}

    def nan_on_rank_1(*args, **kwargs):
        losses = real(*args, **kwargs)
        if trainer.step == 3 and poisoned["left"] > 0:
            poisoned["left"] -= 1
            return losses * float("nan")
        return losses

    trainer.diffusion.training_losses = nan_on_rank_1
    events = list(trainer.run(6, stop=lambda: rank == 1 and trainer.step >= 4))
    resumed = Trainer(Run.open(run_dir), device="cpu", dataset=dataset)  # every process from the same checkpoint
    resumed.resume()
    events += list(resumed.run(6))

    weights = {f"model.{k}": v for k, v in resumed.model.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in resumed.ema.state_dict().items()}
    record = {
        "events": [_describe(e) for e in events if not isinstance(e, SamplesReady)],
        "samples": [e.step for e in events if isinstance(e, SamplesReady)],
        "digest": _digest(weights),
        "resumed_from": resumed.resumed_from,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    distributed.cleanup()


def test_skip_rollback_stop_and_resume_agree_across_processes(tmp_path):
    """A NaN on one process skips the step on both (twice: a rollback, read by both from rank 0's checkpoint); a stop
    asked of one process stops both after the same step; both resume from that checkpoint and end bit-identical.
    Sample grids come from rank 0 alone while rank 1 waits at a barrier."""
    result = _launch(["-m", "tests.test_distributed", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["events"] == ranks[1]["events"]
    events = ranks[0]["events"]
    assert events.count("StepSkipped 3 non-finite loss") == 2  # rank 0's own loss was finite: the flag is shared
    assert "RolledBack 3->2" in events and "TrainFinished 4 stopped" in events and events[-1] == "TrainFinished 6 done"
    assert ranks[0]["resumed_from"] == ranks[1]["resumed_from"] == 4
    assert ranks[0]["digest"] == ranks[1]["digest"]

    run = Run.open(tmp_path / "run")
    final, _ = ckpt.latest_checkpoint(run.checkpoints_dir)
    assert final.step == 6
    assert _digest({k: v for k, v in final.tensors.items() if not k.startswith("optim.")}) == ranks[0]["digest"]
    assert ranks[0]["samples"] == [2, 4, 6] and ranks[1]["samples"] == []
    assert sorted(p.stem for p in run.samples_dir.iterdir()) == ["step_0000002", "step_0000004", "step_0000006"]
    assert [r["step"] for r in run.read_metrics()[0]] == [2, 4, 6]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
