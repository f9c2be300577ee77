"""The output activation of every bundle, written once: the class channels get the bundle's ``activation``
(softmax across classes, or a sigmoid per class), each extra head (boundary, distance...) a sigmoid.

Inference, the halo measurement and the ONNX export all turn raw model outputs into probabilities with these, so
the three agree bit for bit."""

from __future__ import annotations

import torch


def class_probabilities(out: torch.Tensor, n_classes: int, softmax: bool = True) -> torch.Tensor:
    """The first ``n_classes`` channels of a model output (N, C, H, W) as class probabilities."""
    seg = out[:, :n_classes]
    return torch.softmax(seg, dim=1) if softmax else torch.sigmoid(seg)


def head_probabilities(out: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The channels after the classes (the extra heads), each through a sigmoid."""
    return torch.sigmoid(out[:, n_classes:])


def to_probabilities(out: torch.Tensor, n_classes: int, softmax: bool = True) -> torch.Tensor:
    """Classes then heads, in the output's channel order (just the classes when the model has no heads)."""
    seg = class_probabilities(out, n_classes, softmax)
    return torch.cat([seg, head_probabilities(out, n_classes)], dim=1) if out.shape[1] > n_classes else seg
