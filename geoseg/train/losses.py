"""Losses chosen by name in the YAML: smp's (Dice, Jaccard, Lovász, focal, Tversky), CE/BCE, and Tanimoto
with complement, which smp does not have and is written here after Diakogiannis et al. (2020), ResUNet-a."""

from __future__ import annotations

from typing import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from geoseg.train.config import HeadConfig, TrainConfig
from geoseg.train.labels import IGNORE

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OHEM_KEEP = 0.25  # share of labelled pixels the "ohem" loss keeps, the hardest first


def tanimoto(p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Mean over channels of the Tanimoto coefficient sum(pt) / sum(p² + t² - pt), summed over batch and pixels.

    ``p``, ``t``: (n, c, h, w) in 0..1; ``valid`` (n, h, w) masks pixels out.
    """
    if valid is not None:
        m = valid[:, None].to(p.dtype)
        p, t = p * m, t * m
    dims = (0, 2, 3)
    pt = (p * t).sum(dims)
    return ((pt + eps) / ((p * p).sum(dims) + (t * t).sum(dims) - pt + eps)).mean()


def tanimoto_complement_loss(p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - (T(p, t) + T(1 - p, 1 - t)) / 2: the complement term keeps a gradient on empty masks."""
    return 1.0 - 0.5 * (tanimoto(p, t, valid) + tanimoto(1.0 - p, 1.0 - t, valid))


def ohem_cross_entropy(x: torch.Tensor, y: torch.Tensor, keep: float = OHEM_KEEP) -> torch.Tensor:
    """Cross-entropy over the hardest ``keep`` share of the labelled pixels (online hard-example mining):
    the easy background that fills most windows stops drowning out confusers and the gaps between houses."""
    per = F.cross_entropy(x, y, ignore_index=IGNORE, reduction="none").flatten()
    per = per[(y != IGNORE).flatten()]
    if not per.numel():
        return x.sum() * 0.0
    return per.topk(max(1, int(keep * per.numel())), sorted=False).values.mean()


def _one_hot(y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = y != IGNORE
    return F.one_hot(torch.where(valid, y, 0), k).permute(0, 3, 1, 2).float(), valid


def class_loss(name: str, n_classes: int, activation: str) -> Loss:
    """One loss on the class channels: ``(logits (n, k, h, w), labels (n, h, w) with IGNORE) -> scalar``."""
    mode = "multiclass" if activation == "softmax" else "multilabel"

    def probs(logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1) if activation == "softmax" else logits.sigmoid()

    if name == "ce":
        return lambda x, y: F.cross_entropy(x, y, ignore_index=IGNORE)
    if name == "ohem":
        return ohem_cross_entropy
    if name == "bce":
        def bce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            t, valid = _one_hot(y, n_classes)
            per = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1)
            return (per * valid).sum() / valid.sum().clamp(min=1)
        return bce
    if name == "tanimoto":
        def tani(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            t, valid = _one_hot(y, n_classes)
            return tanimoto_complement_loss(probs(x), t, valid)
        return tani
    if name == "focal" and mode == "multilabel":  # smp's multilabel focal loss fails with ignore_index (0.6)
        from torchvision.ops import sigmoid_focal_loss

        def focal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            t, valid = _one_hot(y, n_classes)
            per = sigmoid_focal_loss(x, t, reduction="none").mean(1)
            return (per * valid).sum() / valid.sum().clamp(min=1)
        return focal
    made = {"dice": lambda: smp.losses.DiceLoss(mode, ignore_index=IGNORE),
            "jaccard": lambda: smp.losses.JaccardLoss(mode, ignore_index=IGNORE),
            "lovasz": lambda: smp.losses.LovaszLoss(mode, ignore_index=IGNORE),
            "focal": lambda: smp.losses.FocalLoss(mode, ignore_index=IGNORE),
            # alpha < beta weighs false negatives more: thin roads and small houses are not given up
            "tversky": lambda: smp.losses.TverskyLoss(mode, ignore_index=IGNORE, alpha=0.3, beta=0.7)}[name]()
    if mode == "multilabel":  # smp's multilabel losses take one-hot targets
        def multilabel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            t, valid = _one_hot(y, n_classes)
            t[~valid[:, None].expand_as(t)] = IGNORE
            return made(x, t)
        return multilabel
    return made


def head_loss(head: HeadConfig) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A head's loss: ``(logits (n, c, h, w), target (n, c, h, w) in 0..1, valid (n, h, w)) -> scalar``."""
    def loss(x: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        m = valid[:, None].to(x.dtype).expand_as(x)
        if head.kind == "boundary" and head.shared_weight != 1.0:  # shared walls come as SHARED (see targets)
            m = m * torch.where(t > 1.5, head.shared_weight, 1.0)
            t = t.clamp(max=1.0)
        if head.loss == "bce":
            return (F.binary_cross_entropy_with_logits(x, t, reduction="none") * m).sum() / m.sum().clamp(min=1)
        p = x.sigmoid()
        if head.loss == "mse":
            return (((p - t) ** 2) * m).sum() / m.sum().clamp(min=1)
        if head.loss == "l1":
            return ((p - t).abs() * m).sum() / m.sum().clamp(min=1)
        if head.loss == "dice":
            inter, total = (p * t * m).sum(), ((p + t) * m).sum()
            return 1.0 - (2 * inter + 1e-6) / (total + 1e-6)
        return tanimoto_complement_loss(p, t, valid)
    return loss


class MultitaskLoss(torch.nn.Module):
    """Weighted sum of the class losses and each head's loss; returns the total and its parts (for the log)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.k = cfg.n_classes
        self.terms = {name: (w, class_loss(name, self.k, cfg.activation)) for name, w in cfg.loss.items()}
        self.heads = [(h, head_loss(h)) for h in cfg.heads]
        self.channels = dict(cfg.head_channels())

    def forward(self, out: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = out.float()
        logits, y = out[:, :self.k], targets["mask"]
        parts = {name: loss(logits, y) * w for name, (w, loss) in self.terms.items()}
        valid = y != IGNORE
        start = self.k
        for head, loss in self.heads:
            c = self.channels[head.name]
            t = targets[head.kind]
            t = t if t.dim() == 4 else t[:, None]
            parts[head.name] = loss(out[:, start:start + c], t, valid) * head.weight
            start += c
        total = torch.stack(list(parts.values())).sum()
        return total, {k: float(v.detach()) for k, v in parts.items()}
