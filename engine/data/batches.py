"""Training batches: [B, C, H, W] float in [-1, 1], shuffled afresh each epoch, randomly mirrored, in an order fixed
by a seed and resumable at any `BatchPosition`; under distributed training, each process's contiguous shard of them.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .dataset import ImageDataset
from .spec import DataError

# ---- pixel ranges (Ho et al. 2020, Sec. 3.3: integers 0..255 scaled linearly to [-1, 1]) ----
# Tensor to tensor, any shape, on any device; images.to_uint8 / from_uint8 are the numpy [N, H, W, C] pair for
# pictures that leave the engine.


def to_model_range(images: Tensor) -> Tensor:
    """uint8 [...] in 0..255 -> float32 [...] in [-1, 1]."""
    assert images.dtype == torch.uint8, images.dtype
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8_tensor(x: Tensor) -> Tensor:
    """float [...] in [-1, 1] -> uint8 [...]: round((x + 1) * 127.5), clamped; inverts to_model_range exactly."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---- batches: shuffled per epoch, flipped, exactly resumable ----


@dataclass(frozen=True)
class BatchPosition:
    """Where a batch stream stands: `index` images of epoch `epoch`'s shuffled order have been yielded."""

    epoch: int = 0
    index: int = 0


class BatchIterator:
    """An endless stream of [B, C, H, W] float batches in [-1, 1]; `position` is where the next batch starts.

    The images form one long sequence, epoch after epoch, each epoch a fresh permutation; batch k is images
    k*B .. k*B+B-1 of that sequence, so a batch may straddle two epochs and no image is ever dropped. Epoch e's
    permutation and flips come from a generator seeded by (base seed, e) alone, so any position can be reached
    without replaying the ones before it: store `position` in the checkpoint and pass it back as `start`.

    Sharded (`num_shards` > 1, one shard per distributed process): every process walks the same global stream and
    keeps images shard*b .. shard*b+b-1 of each global batch, b = batch_size / num_shards, sliced before decoding so a
    streamed dataset decodes only its own shard. The shards of one batch, concatenated, are the unsharded batch, and
    `position` is the global one, the same in every process.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        generator: torch.Generator,
        hflip: bool,
        start: BatchPosition = BatchPosition(),
        device: torch.device | str | None = None,
        shard: int = 0,
        num_shards: int = 1,
    ):
        if len(dataset) == 0:
            raise DataError("the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 <= start.index <= len(dataset) or start.epoch < 0:
            raise ValueError(f"{start} is outside a dataset of {len(dataset)} images")
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} of {num_shards} does not exist")
        if batch_size % num_shards:
            raise ValueError(
                f"the batch size {batch_size} (the global batch) does not split evenly over "
                f"{num_shards} processes: choose a multiple of {num_shards}"
            )
        self.dataset, self.batch_size, self.hflip, self.device = dataset, batch_size, hflip, device
        self.shard_size = batch_size // num_shards
        self.num_shards = num_shards
        self._shard = slice(shard * self.shard_size, (shard + 1) * self.shard_size)
        # One draw: the same generator state at the start of a run gives the same stream, and so the same resume.
        self.base_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        self.position = self._normalised(start)
        self._pending: collections.deque[tuple[Tensor, BatchPosition]] = collections.deque()
        self._stream: Iterator[Tensor] | None = None
        self._order_cache: tuple[int, Tensor, Tensor] | None = None

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Tensor:
        return self.next_with_kept()[0]

    def next_with_kept(self) -> tuple[Tensor, Tensor]:
        """(images [B', C, H, W] in [-1, 1], kept [batch_size / num_shards] bool): which of the shard's images decoded.

        B' < B only for a streamed dataset with files that fail to decode; a sharded stream then yields even an
        empty batch, so that every process takes every batch and they stay in step.
        """
        if self._stream is None:
            self._stream = self._batches()
        return next(self._stream)

    def close(self) -> None:
        """Stop the decoding threads of a streamed dataset now rather than at garbage collection."""
        if self._stream is not None:
            self._stream.close()

    def epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(permutation [N] int64, flip [N] bool) of one epoch: position p shows image perm[p], mirrored if flip[p]."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            seed = int(np.random.SeedSequence([self.base_seed, epoch]).generate_state(1, np.uint64)[0])
            generator = torch.Generator().manual_seed(seed)
            n = len(self.dataset)
            perm = torch.randperm(n, generator=generator)
            flip = torch.rand(n, generator=generator) < 0.5
            self._order_cache = (epoch, perm, flip if self.hflip else torch.zeros(n, dtype=torch.bool))
        return self._order_cache[1], self._order_cache[2]

    def _normalised(self, position: BatchPosition) -> BatchPosition:
        return BatchPosition(position.epoch + 1, 0) if position.index == len(self.dataset) else position

    def _index_batches(self) -> Iterator[Tensor]:
        epoch, index = self.position.epoch, self.position.index
        n = len(self.dataset)
        while True:
            parts, flips, need = [], [], self.batch_size
            while need:
                perm, flip = self.epoch_order(epoch)
                take = min(need, n - index)
                parts.append(perm[index : index + take])
                flips.append(flip[index : index + take])
                index, need = index + take, need - take
                if index == n:
                    epoch, index = epoch + 1, 0
            self._pending.append((torch.cat(flips)[self._shard], BatchPosition(epoch, index)))
            yield torch.cat(parts)[self._shard]  # this shard's indices only: only they are decoded

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, kept in self.dataset.read_ahead(self._index_batches()):
            flip, end = self._pending.popleft()  # read_ahead keeps batch order, so the queues stay in step
            self.position = end
            if len(images) == 0 and self.num_shards == 1:
                continue  # every file of this batch failed to decode (streamed folders only)
            x = images.to(self.device, non_blocking=True) if self.device is not None else images
            mirror = flip[kept].to(x.device).view(-1, 1, 1, 1)
            yield to_model_range(torch.where(mirror, x.flip(-1), x)), kept  # [B', C, H, W] in [-1, 1], [B] bool


def batches(
    dataset: ImageDataset,
    batch_size: int,
    generator: torch.Generator,
    hflip: bool = True,
    start: BatchPosition = BatchPosition(),
    device: torch.device | str | None = None,
    shard: int = 0,
    num_shards: int = 1,
) -> BatchIterator:
    """Training batches, [batch_size, C, H, W] float32 in [-1, 1]; random horizontal flips as in the paper's CIFAR-10.

    Draws one number from `generator`; to resume, pass a generator in the same state (seeded with the run's seed)
    and the checkpoint's `BatchIterator.position` as `start`. With `num_shards` > 1, each batch is this process's
    `shard` of the global batch of `batch_size` (see `BatchIterator`).
    """
    return BatchIterator(dataset, batch_size, generator, hflip, start, device, shard, num_shards)
