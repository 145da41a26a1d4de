"""Nowcasting moving digits with an encoder-forecaster ConvGRU (Shi et al. 2015, with GRUs), on the CPU.

The data is real and bundled: scikit-learn's 8x8 handwritten digits (``sklearn.datasets.load_digits``, nothing
is downloaded), upsampled and bouncing around a larger canvas, one or two digits per sequence, each with a
random direction and speed.  The model sees the first ``N = 5`` frames and predicts the next ``K = 5``:

* a strided convolutional encoder maps each frame to features at a quarter of its resolution;
* an encoder :class:`convgru_ext.ConvGRU` runs over the ``N`` observed frames' features;
* a forecaster :class:`convgru_ext.ConvGRU` starts from the encoder's final state and rolls forward ``K`` steps,
  fed at each step the encoding of the last observed frame (what was last seen; the state carries the motion);
* a transposed-convolution decoder turns each forecaster state into a frame in [0, 1] (a sigmoid).

It trains with binary cross-entropy and reports the validation mean squared error per pixel next to two
baselines: copying the last observed frame into every future frame, and predicting an empty canvas.  Train
and validation sequences are built from disjoint digit images.  It writes ``nowcast_digits.png`` (inputs,
truth and predictions for a few validation sequences) and ``nowcast_digits_loss.png`` (the loss curves).

Run (about two minutes on two CPU cores)::

    python examples/nowcast_digits.py                 # --out examples/  --steps 400  --size 48
    python examples/nowcast_digits.py --size 24 --steps 60 --out /tmp/nowcast    # a few seconds

``--size`` is the canvas' side in pixels (a multiple of 4; the digits are a third of it).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from convgru_ext import ConvGRU

INPUT_FRAMES = 5  # N: the frames the model sees
OUTPUT_FRAMES = 5  # K: the frames it predicts


# --------------------------------------------------------------------------------------------- data


def load_digit_images(digit_size: int, seed: int, val_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 digit images in [0, 1], upsampled to ``digit_size``: ``(train, val)``, split by image.

    Each is (n, digit_size, digit_size); the split is a random permutation drawn from ``seed``.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    images = torch.tensor(load_digits().images, dtype=torch.float32) / 16.0  # (1797, 8, 8), ink in [0, 1]
    if digit_size != images.shape[-1]:
        images = F.interpolate(images[:, None], size=(digit_size, digit_size), mode="bilinear",
                               align_corners=False)[:, 0].clamp(0.0, 1.0)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(images) * val_fraction)
    return images[order[n_val:]], images[order[:n_val]]


def make_sequences(digits: Tensor, count: int, canvas: int, generator: torch.Generator,
                   frames: int = INPUT_FRAMES + OUTPUT_FRAMES) -> Tensor:
    """``count`` sequences (count, frames, 1, canvas, canvas) of one or two of ``digits`` bouncing off the walls.

    Each digit starts at a uniform position, moving in a uniform direction at 0.1 to 0.2 digit sizes per
    frame; overlapping digits combine by their maximum.  Everything random comes from ``generator``.
    """
    d = digits.shape[-1]
    room = canvas - d  # a digit's top-left corner stays in [0, room] on both axes
    rand = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
    present = torch.stack([torch.ones(count, dtype=torch.bool), rand(count) < 0.5], 1)  # (count, 2): digits
    which = torch.randint(len(digits), (count, 2), generator=generator)
    angle, speed = 2 * math.pi * rand(count, 2), d * (0.1 + 0.1 * rand(count, 2))
    velocity = speed[..., None] * torch.stack([angle.cos(), angle.sin()], -1)  # (count, 2, 2): (y, x) per frame
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    unfolded = rand(count, 2, 1, 2) * room + velocity[:, :, None] * t  # (count, 2, frames, 2): free flight
    folded = unfolded.remainder(2 * room)  # bouncing off both walls = folding the line into [0, room]
    corner = torch.where(folded > room, 2 * room - folded, folded).round().long()
    out = torch.zeros(count, frames, 1, canvas, canvas)
    for i, k in present.nonzero().tolist():
        for f, (y, x) in enumerate(corner[i, k].tolist()):
            patch = out[i, f, 0, y:y + d, x:x + d]
            torch.maximum(patch, digits[which[i, k]], out=patch)
    return out


# --------------------------------------------------------------------------------------------- model


class Nowcaster(nn.Module):
    """Encoder-forecaster ConvGRU: (B, N, 1, H, W) frames in [0, 1] -> logits (B, K, 1, H, W) of the next K.

    ``hidden`` is both ConvGRUs' state channels, at a quarter of the frames' resolution; ``backend`` is
    passed to them (see :func:`convgru_ext.available_backends`).
    """

    def __init__(self, hidden: int = 32, features: int = 32, backend: str = "auto"):
        super().__init__()
        self.encode_frame = nn.Sequential(  # (1, H, W) -> (features, H/4, W/4)
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, features, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.encoder = ConvGRU(features, hidden, kernel_size=3, batch_first=True, backend=backend)
        self.forecaster = ConvGRU(features, hidden, kernel_size=3, batch_first=True, backend=backend)
        self.decode_frame = nn.Sequential(  # (hidden, H/4, W/4) -> logits (1, H, W), upsampling by pixel shuffles
            nn.Conv2d(hidden, 4 * 16, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2),
            nn.Conv2d(16, 4 * 1, 3, padding=1), nn.PixelShuffle(2),
        )

    def forward(self, frames: Tensor, horizon: int = OUTPUT_FRAMES) -> Tensor:
        """Logits of the ``horizon`` frames after ``frames`` (apply a sigmoid for frames)."""
        B, N = frames.shape[:2]
        encoded = self.encode_frame(frames.flatten(0, 1)).unflatten(0, (B, N))  # (B, N, features, h, w)
        _, h_n = self.encoder(encoded)
        last_seen = encoded[:, -1:].expand(-1, horizon, -1, -1, -1)
        states, _ = self.forecaster(last_seen, h_n)  # (B, K, hidden, h, w)
        return self.decode_frame(states.flatten(0, 1)).unflatten(0, (B, horizon))


# --------------------------------------------------------------------------------------------- training


def split(sequences: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N + K, ...) sequences -> (inputs (B, N, ...), targets (B, K, ...))."""
    return sequences[:, :INPUT_FRAMES], sequences[:, INPUT_FRAMES:]


@torch.no_grad()
def evaluate(model: Nowcaster, sequences: Tensor, batch: int = 64) -> float:
    """The model's mean squared error per pixel over the predicted frames of ``sequences``."""
    model.eval()
    total = 0.0
    for start in range(0, len(sequences), batch):
        inputs, targets = split(sequences[start:start + batch])
        total += F.mse_loss(torch.sigmoid(model(inputs)), targets, reduction="sum").item()
    model.train()
    return total / sequences[:, INPUT_FRAMES:].numel()


def baselines(sequences: Tensor) -> dict[str, float]:
    """Mean squared errors per pixel of copying the last observed frame, and of predicting an empty canvas."""
    inputs, targets = split(sequences)
    return {"copy_last": F.mse_loss(inputs[:, -1:].expand_as(targets), targets).item(),
            "empty": targets.square().mean().item()}


def train(model: Nowcaster, train_digits: Tensor, val: Tensor, args: argparse.Namespace,
          generator: torch.Generator) -> dict[str, list]:
    """Adam with a one-cycle learning rate on fresh sequences every step; returns the loss history.

    The history holds ``step`` and ``train_bce`` for every step, and ``val_step`` and ``val_mse`` for the
    evaluations (about 8 of them, the last one after the final step).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.2)
    history: dict[str, list] = {"step": [], "train_bce": [], "val_step": [], "val_mse": []}
    eval_every = max(1, args.steps // 8)
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("BCE {task.fields[bce]:.4f}  val MSE {task.fields[val]:.5f}"))
    with Progress(*columns) as progress:
        task = progress.add_task("train", total=args.steps, bce=float("nan"), val=float("nan"))
        for step in range(1, args.steps + 1):
            inputs, targets = split(make_sequences(train_digits, args.batch, args.size, generator))
            loss = F.binary_cross_entropy_with_logits(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            history["step"].append(step)
            history["train_bce"].append(loss.item())
            if step % eval_every == 0 or step == args.steps:
                history["val_step"].append(step)
                history["val_mse"].append(evaluate(model, val))
                progress.update(task, val=history["val_mse"][-1])
            progress.update(task, advance=1, bce=loss.item())
    return history


# --------------------------------------------------------------------------------------------- figures


def plot_predictions(model: Nowcaster, sequences: Tensor, path: Path) -> None:
    """A PNG of a few sequences: per sequence, the N inputs then the K true frames, and below the K predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs, targets = split(sequences)
    with torch.no_grad():
        model.eval()
        predicted = torch.sigmoid(model(inputs))
        model.train()
    n, frames = len(sequences), INPUT_FRAMES + OUTPUT_FRAMES
    fig, axes = plt.subplots(2 * n, frames, figsize=(frames * 0.9, 2 * n * 0.9 + 0.4), squeeze=False)
    for i in range(n):
        for t in range(frames):
            top, bottom = axes[2 * i, t], axes[2 * i + 1, t]
            top.imshow(sequences[i, t, 0], cmap="gray", vmin=0, vmax=1)
            if t >= INPUT_FRAMES:
                bottom.imshow(predicted[i, t - INPUT_FRAMES, 0], cmap="gray", vmin=0, vmax=1)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if t < INPUT_FRAMES:
                bottom.axis("off")
        axes[2 * i, 0].set_ylabel("input", fontsize=7)
        axes[2 * i, INPUT_FRAMES].set_ylabel("truth", fontsize=7)
        axes[2 * i + 1, INPUT_FRAMES].set_ylabel("predicted", fontsize=7)
    for t in range(frames):
        axes[0, t].set_title(f"t={t + 1}", fontsize=7)
    fig.suptitle(f"{INPUT_FRAMES} frames in, {OUTPUT_FRAMES} predicted (validation digits)", fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_losses(history: dict[str, list], base: dict[str, float], path: Path) -> None:
    """A PNG of the training BCE per step and the validation MSE next to the baselines' MSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(8, 3))
    ax_train.plot(history["step"], history["train_bce"], lw=0.8)
    ax_train.set(title="training loss", xlabel="step", ylabel="binary cross-entropy", yscale="log")
    ax_val.plot(history["val_step"], history["val_mse"], "o-", ms=3, label="ConvGRU")
    ax_val.axhline(base["copy_last"], color="C3", ls="--", label="copy last frame")
    ax_val.axhline(base["empty"], color="C7", ls=":", label="empty canvas")
    ax_val.set(title="validation", xlabel="step", ylabel="MSE per pixel")
    ax_val.set_ylim(0, 1.1 * max(base.values()))
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder for the PNGs (default: this file's folder)")
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--size", type=int, default=48, help="canvas side in pixels, a multiple of 4 (>= 12)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per training step")
    parser.add_argument("--hidden", type=int, default=32, help="ConvGRU state channels")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--val", type=int, default=128, help="validation sequences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: half the CPU cores, at least 1)")
    parser.add_argument("--backend", default="auto", help="the ConvGRUs' backend (python -m convgru_ext info)")
    args = parser.parse_args(argv)
    if args.size % 4 or args.size < 12:
        parser.error("--size must be a multiple of 4, at least 12")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv=None) -> dict:
    """Train, evaluate and plot; returns the numbers it printed.

    Returns ``{"val_mse", "copy_last_mse", "empty_mse", "train_seconds", "history", "figures"}``: the final
    validation MSE per pixel, the two baselines', the training time and the loss history, and the two PNGs'
    paths.
    """
    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    # Half the cores: these convolutions are small, and on a shared 2-core machine a second thread made each
    # step slower, not faster (OpenMP threads wait on each other whenever another process takes a core).
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // 2))
    try:
        torch.manual_seed(args.seed)
        train_digits, val_digits = load_digit_images(args.size // 3, args.seed)
        val = make_sequences(val_digits, args.val, args.size, torch.Generator().manual_seed(args.seed + 1))
        base = baselines(val)
        model = Nowcaster(hidden=args.hidden, backend=args.backend)
        print(f"{len(train_digits)} training and {len(val_digits)} validation digit images; {args.size}x{args.size} "
              f"canvas; {sum(p.numel() for p in model.parameters())} parameters; {torch.get_num_threads()} threads")

        start = time.perf_counter()
        history = train(model, train_digits, val, args, torch.Generator().manual_seed(args.seed + 2))
        seconds = time.perf_counter() - start
        val_mse = history["val_mse"][-1]
        print(f"trained {args.steps} steps in {seconds:.1f} s")
        print(f"validation MSE per pixel: ConvGRU {val_mse:.5f}, copy last frame {base['copy_last']:.5f} "
              f"({val_mse / base['copy_last']:.2f}x), empty canvas {base['empty']:.5f}")

        args.out.mkdir(parents=True, exist_ok=True)
        figures = {"predictions": args.out / "nowcast_digits.png", "losses": args.out / "nowcast_digits_loss.png"}
        plot_predictions(model, val[:4], figures["predictions"])
        plot_losses(history, base, figures["losses"])
        print("wrote " + ", ".join(str(p) for p in figures.values()))
    finally:
        torch.set_num_threads(threads_before)
    return {"val_mse": val_mse, "copy_last_mse": base["copy_last"], "empty_mse": base["empty"],
            "train_seconds": seconds, "history": history, "figures": figures}


if __name__ == "__main__":
    main()
