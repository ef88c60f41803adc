"""Are the samples of a model trained on builtin:shapes recognisable shapes? A number instead of squinting.

A small CNN is trained (about 2 minutes on one CPU thread) to sort 16x16 pictures into circle, square, triangle
and *other*: irregular polygons, ellipses and overlapping discs in the same colours, sizes and positions as
builtin:shapes, with mild blur and pixel noise, i.e. the blobs an undertrained model draws. A sample counts as
recognisable when the classifier gives one of the three shapes a probability above 0.8. The reference, measured in
the same run, is the test split of builtin:shapes itself (about 99% recognisable); the headline per checkpoint is
the fraction of its samples that are recognisable, and the ratio of that to the reference.

    python benchmarks/shapes_score.py RUN_DIR_OR_CHECKPOINT [...] --n 256 --steps 100

Samples: `--n` from the EMA weights with a fixed seed, a strided chain of `--steps` (as the training previews),
or the exact chain with `--steps 1000`. JSON goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout, uninstalled
from engine.config import Precision  # noqa: E402
from engine.data.shapes import _distinct_colours, render_shape  # noqa: E402
from engine.data.spec import Split  # noqa: E402
from engine.images import from_uint8  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.sampling import generate, sample  # noqa: E402

SIZE = 16
KINDS = ("circle", "square", "triangle", "other")
CONFIDENT = 0.8
_SUPERSAMPLE = 4


def _polygon(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour) -> None:
    draw.polygon([(x * _SUPERSAMPLE, y * _SUPERSAMPLE) for x, y in points], fill=colour)


def render(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One labelled picture [SIZE, SIZE, 3] uint8: kinds 0-2 drawn as builtin:shapes draws them, 3 a near miss."""
    background, colour = _distinct_colours(rng)
    size_u, x_u, y_u, angle_u = rng.random(4).tolist()
    r = (0.22 + 0.23 * size_u) * SIZE
    cx, cy = r + x_u * (SIZE - 2 * r), r + y_u * (SIZE - 2 * r)
    image = Image.new("RGB", (SIZE * _SUPERSAMPLE,) * 2, background)
    draw = ImageDraw.Draw(image)
    ring = lambda radii, angles: [(cx + q * math.cos(a), cy + q * math.sin(a)) for q, a in zip(radii, angles)]
    disc = lambda x, y, radius: draw.ellipse(
        [
            (x - radius) * _SUPERSAMPLE,
            (y - radius) * _SUPERSAMPLE,
            (x + radius) * _SUPERSAMPLE,
            (y + radius) * _SUPERSAMPLE,
        ],
        fill=colour,
    )
    if kind == 0:
        disc(cx, cy, r)
    elif kind in (1, 2):
        corners = 4 if kind == 1 else 3
        _polygon(draw, ring([r] * corners, [2 * math.pi * (angle_u + k / corners) for k in range(corners)]), colour)
    else:
        mode = int(rng.integers(3))
        if mode == 0:  # an irregular polygon: a blob
            n = int(rng.integers(5, 10))
            _polygon(draw, ring(r * rng.uniform(0.55, 1.0, n), np.sort(rng.random(n)) * 2 * math.pi), colour)
        elif mode == 1:  # a rotated ellipse
            aspect, turn = rng.uniform(0.4, 0.72), rng.random() * math.pi
            u = np.linspace(0, 2 * math.pi, 40)
            x, y = r * np.cos(u), aspect * r * np.sin(u)
            _polygon(
                draw,
                list(zip(cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn))),
                colour,
            )
        else:  # two overlapping discs
            for _ in range(2):
                ox, oy = rng.uniform(-0.5, 0.5, 2) * r
                disc(cx + ox, cy + oy, 0.6 * r)
    small = image.reduce(_SUPERSAMPLE)
    blur = rng.uniform(0, 0.5)
    if blur > 0.15:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(small, dtype=np.float32) + rng.normal(0, 3, (SIZE, SIZE, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def labelled(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(KINDS), count)
    return from_uint8(np.stack([render(int(k), rng) for k in kinds])), torch.from_numpy(kinds)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        conv = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
        self.layers = nn.Sequential(
            *conv(3, 32),
            *conv(32, 32),
            nn.MaxPool2d(2),
            *conv(32, 64),
            *conv(64, 64),
            nn.MaxPool2d(2),
            *conv(64, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, len(KINDS)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def train_classifier(count: int = 40_000, epochs: int = 6, seed: int = 0) -> tuple[Classifier, float]:
    """The classifier and its accuracy on fresh labelled pictures."""
    torch.manual_seed(seed)
    x, y = labelled(count, seed + 1)
    x_val, y_val = labelled(4000, seed + 2)
    net = Classifier()
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for epoch in range(epochs):
        for batch in torch.randperm(count).split(128):
            xb = x[batch]
            xb = torch.where(torch.rand(len(batch), 1, 1, 1) < 0.5, xb.flip(-1), xb)  # the data are mirrored too
            loss = F.cross_entropy(net(xb), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"classifier epoch {epoch + 1}/{epochs}", file=sys.stderr, flush=True)
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x_val).argmax(1) == y_val).float().mean())
    return net, accuracy


def recognisable(net: Classifier, x: torch.Tensor) -> dict:
    """x [N, 3, SIZE, SIZE] in [-1, 1] -> the recognisable fraction and the counts per predicted kind."""
    with torch.no_grad():
        p = net(x.clamp(-1, 1).float()).softmax(1)
    confident = p[:, :3].max(1).values > CONFIDENT
    counts = p.argmax(1).bincount(minlength=len(KINDS)).tolist()
    return {"recognisable": float(confident.float().mean()), "counts": dict(zip(KINDS, counts))}


def _classifier(path: str | None) -> tuple[Classifier, float | None]:
    from safetensors.torch import load_file, save_file

    if path and Path(path).exists():
        net = Classifier()
        net.load_state_dict(load_file(path))
        return net.eval(), None
    net, accuracy = train_classifier()
    if path:
        save_file(net.state_dict(), path)
    return net, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="run directories or checkpoint files of 16x16 RGB models")
    parser.add_argument("--n", type=int, default=256, help="samples per model (default 256)")
    parser.add_argument("--steps", type=int, default=100, help="reverse steps, strided when below T (default 100)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument(
        "--classifier",
        default=None,
        help="a .safetensors file: load the classifier from it if it exists, else train and save it there",
    )
    parser.add_argument(
        "--precision",
        default="fp32,bf16",
        help="the network's precision while sampling, several to compare (default fp32,bf16: the same seed both ways)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # small work; one thread is the fast choice on a small, shared CPU
    net, accuracy = _classifier(args.classifier)
    real = from_uint8(np.stack([render_shape(i, (SIZE, SIZE), Split.TEST) for i in range(1000)]))
    reference = recognisable(net, real)
    results = []
    for source in args.models:
        loaded = load_model(source, device="cpu")
        if loaded.unet_config.image_size != (SIZE, SIZE) or loaded.unet_config.in_channels != 3:
            sys.exit(
                f"{source}: the classifier reads {SIZE}x{SIZE} RGB, this model draws "
                f"{loaded.unet_config.image_size} with {loaded.unet_config.in_channels} channels"
            )
        for precision in args.precision.split(","):
            x = sample(
                generate(
                    loaded.denoiser(Precision(precision)),
                    loaded.diffusion,
                    (args.n, 3, SIZE, SIZE),
                    torch.Generator().manual_seed(args.seed),
                    num_steps=args.steps,
                )
            )
            score = recognisable(net, x)
            score.update(
                source=str(source),
                step=loaded.step,
                precision=precision,
                ratio_to_reference=score["recognisable"] / max(reference["recognisable"], 1e-9),
            )
            results.append(score)
            print(json.dumps(score), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "classifier_accuracy": accuracy,
                "reference": reference,
                "n": args.n,
                "steps": args.steps,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
