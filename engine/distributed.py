"""Several processes training one model: the process group that `torchrun` describes, and the few collectives the
training loop needs. Every helper is a no-op (or the identity) in a single process, so the loop has one code path.

    torchrun --nproc_per_node N -m engine train --run DIR ...

torchrun starts N copies of the command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set;
`init_from_env` joins them: NCCL with one GPU per LOCAL_RANK where CUDA is available, gloo on the CPU otherwise.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .device import pick_device


def launched_with_torchrun() -> bool:
    """True when torchrun (or anything that sets its variables) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join torchrun's process group and return this rank's device; without torchrun, just `pick_device(device)`.

    CUDA (unless `device` names another kind) means NCCL and the GPU LOCAL_RANK; anything else means gloo.
    """
    chosen = pick_device(device)
    if not launched_with_torchrun() or is_distributed():
        return rank_device(chosen)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank())
        torch.cuda.set_device(chosen)
        backend = "nccl"
    elif chosen.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {chosen.type}")
    dist.init_process_group(
        backend, timeout=datetime.timedelta(seconds=timeout_s), device_id=chosen if backend == "nccl" else None
    )
    return chosen


def rank_device(device: torch.device) -> torch.device:
    """`device`, with a bare "cuda" pinned to this rank's GPU (LOCAL_RANK) when distributed."""
    if device.type == "cuda" and device.index is None and launched_with_torchrun():
        return torch.device("cuda", local_rank())
    return device


def cleanup() -> None:
    """Leave the process group (at the end of a run, or after an error)."""
    if is_distributed():
        dist.destroy_process_group()


# ---- who am I ----


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and talks to the user."""
    return rank() == 0


def shard_size(global_batch: int) -> int:
    """This process's part of every global batch; refuses a batch that does not split evenly."""
    if global_batch % world_size():
        raise ValueError(
            f"the batch size {global_batch} is the global batch and must split evenly over the "
            f"{world_size()} processes: choose a multiple of {world_size()}"
        )
    return global_batch // world_size()


# ---- collectives ----


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `tensor`, as a new tensor on `tensor`'s device (the tensor itself in one process)."""
    if not is_distributed():
        return tensor
    buffer = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a floating-point `tensor`."""
    return all_reduce_sum(tensor) / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any: decisions that change control flow (stop, skip) must agree."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def barrier() -> None:
    """Wait until every rank gets here (e.g. while rank 0 alone renders samples)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
