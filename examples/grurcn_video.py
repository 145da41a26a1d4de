"""A GRU-RCN video classifier (Ballas et al. 2016) on VGG-16 percepts: one training step on random clips.

Every frame goes through a frozen VGG-16; the feature maps after some of its pooling stages (pool2..pool5
by default) are the percepts of a :class:`convgru_ext.grurcn.GRURCN` (``--stacked``: each level's gates
also see the level below).  Each level's last state (``--all-states``: all its states) is average-pooled,
and one linear layer over the concatenation classifies the clip: the same as averaging the logits of one
linear classifier per level, as the paper averages its per-level classifiers.

The VGG-16 is ``torchvision.models.vgg16(weights=None)`` (random weights), or the state_dict in the file
``--weights PATH`` (nothing is ever downloaded).  Run ``python examples/grurcn_video.py --help``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from convgru_ext.grurcn import GRURCN


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


class VideoClassifier(nn.Module):
    """Clips (B, T, 3, H, W) -> logits (B, classes): frozen VGG-16 percepts, a GRURCN, pooling, a linear layer.

    ``levels`` are VGG-16 pooling stages (1..5), whose outputs are the percepts; ``hidden`` the GRURCN's
    hidden size at each of them.
    """

    def __init__(self, vgg_features: nn.Sequential, levels: list[int], hidden: list[int], classes: int,
                 stacked: bool = False, dropout: float = 0.0, all_states: bool = False):
        super().__init__()
        pools = [i for i, m in enumerate(vgg_features) if isinstance(m, nn.MaxPool2d)]
        self.taps = [pools[stage - 1] for stage in levels]  # the index of each percept's pooling layer
        channels = [[m.out_channels for m in vgg_features[:tap] if isinstance(m, nn.Conv2d)][-1] for tap in self.taps]
        self.cnn = vgg_features[: self.taps[-1] + 1].requires_grad_(False).eval()
        self.rcn = GRURCN(channels, hidden, stacked=stacked, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(hidden), classes)
        self.all_states = all_states

    def percepts(self, clips: Tensor) -> list[Tensor]:
        """The frozen CNN's feature maps at ``taps``, each (B, T, C, H, W)."""
        x, found = clips.flatten(0, 1), []
        with torch.no_grad():
            for i, layer in enumerate(self.cnn):
                x = layer(x)
                if i in self.taps:
                    found.append(x.unflatten(0, clips.shape[:2]))
        return found

    def forward(self, clips: Tensor) -> Tensor:
        outputs, h_n = self.rcn(self.percepts(clips))
        if self.all_states:
            features = [out.mean(dim=(1, 3, 4)) for out in outputs]  # over time and space
        else:
            features = [h.mean(dim=(2, 3)) for h in h_n]
        return self.classifier(self.dropout(torch.cat(features, dim=1)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="clips per batch (B)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (T)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--levels", type=_ints, default=[2, 3, 4, 5], help="VGG-16 pooling stages, e.g. 2,3,4,5")
    parser.add_argument("--hidden", type=_ints, default=[32, 64, 64, 64], help="GRU-RCN hidden size per level")
    parser.add_argument("--stacked", action="store_true", help="stacked GRU-RCN (bottom-up connections)")
    parser.add_argument("--all-states", action="store_true", help="pool every state, not only the last")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout before the classifier")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--weights", metavar="PATH", help="a torchvision VGG-16 state_dict file to load")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.hidden) != len(args.levels) or not all(1 <= s <= 5 for s in args.levels):
        parser.error("--levels must be pooling stages in 1..5, and --hidden give one size per level")
    if args.size % 2 ** max(args.levels):
        parser.error(f"--size must be a multiple of {2 ** max(args.levels)} (VGG-16 halves it at each stage)")
    return args


def main(argv=None) -> dict:
    """Build the classifier, run one SGD step on random clips and labels, and print the loss and the time.

    Returns ``{"loss", "seconds", "model", "before"}``, ``before`` holding the trainable parameters'
    values before the step.
    """
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    vgg = torchvision.models.vgg16(weights=None)
    if args.weights:
        vgg.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model = VideoClassifier(vgg.features, args.levels, args.hidden, args.classes, stacked=args.stacked,
                            dropout=args.dropout, all_states=args.all_states).train()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in trainable.items()}
    optimizer = torch.optim.SGD(trainable.values(), lr=args.lr, momentum=0.9)
    clips = torch.randn(args.batch, args.frames, 3, args.size, args.size)
    labels = torch.randint(args.classes, (args.batch,))

    start = time.perf_counter()
    loss = F.cross_entropy(model(clips), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    print(f"loss {loss.item():.4f}; one training step in {seconds:.2f} s (B={args.batch}, T={args.frames}, "
          f"{args.size}x{args.size} frames, pool stages {args.levels}, stacked={args.stacked})")
    return {"loss": loss.item(), "seconds": seconds, "model": model, "before": before}


if __name__ == "__main__":
    main()
