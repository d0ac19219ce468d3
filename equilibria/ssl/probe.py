"""The linear probe: multinomial logistic regression on frozen backbone features.

Features are standardized with the training split's statistics, and the regression (with an L2
penalty) is fitted by full-batch L-BFGS in float64, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData, ImageSplit
from ..errors import check_nonnegative, check_positive_int


@dataclass
class LinearProbe:
    """A fitted probe: standardization (mean, std) and the linear map (weight, bias)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.double() - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.logits(features).argmax(1) == labels).double().mean())


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    *,
    l2: float = 1e-3,
    iters: int = 200,
) -> LinearProbe:
    """Logistic regression of `labels` (n,) on `features` (n, dim), on the CPU.

    Minimizes mean cross-entropy + l2 * ||W||^2 / 2 over standardized features.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"the probe needs features (n, dim) and labels (n,), got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    check_positive_int("classes", classes, minimum=2)
    check_nonnegative("l2", l2)
    check_positive_int("iters", iters)
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    x = features.detach().cpu().double()
    y = labels.detach().cpu()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    x = (x - mean) / std
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    data: ImageData,
    split: ImageSplit,
    device: torch.device,
    *,
    batch_size: int = 512,
) -> tuple[torch.Tensor, float | None]:
    """The backbone's features of every image of `split` in eval mode (on the CPU), and the
    mean forward NFE per image (None for an explicit backbone)."""
    features, solves = features_and_solves(backbone, data, split, device, batch_size=batch_size)
    return features, None if solves is None else solves["forward_nfe"]


def features_and_solves(
    backbone: nn.Module,
    data: ImageData,
    split: ImageSplit,
    device: torch.device,
    *,
    batch_size: int = 512,
) -> tuple[torch.Tensor, dict[str, float] | None]:
    """As `extract_features`, with the mean forward NFE, residual and converged fraction per
    image of the backbone's solves (None for an explicit backbone)."""
    backbone.eval()
    chunks, sums = [], torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size]
        chunks.append(backbone(data.inputs(images, device)).float().cpu())
        stats = getattr(backbone, "stats", None)
        if stats is not None:
            solve = stats.forward
            sums += torch.tensor(
                [
                    stats.forward_nfe * images.shape[0],
                    float(solve.residual.float().sum()),
                    float(stats.converged.sum()),
                ],
                dtype=torch.float64,
            )
    if getattr(backbone, "stats", None) is None:
        return torch.cat(chunks), None
    nfe, residual, converged = (sums / len(split)).tolist()
    return torch.cat(chunks), {"forward_nfe": nfe, "residual": residual, "converged": converged}


def probe_backbone(
    backbone: nn.Module,
    data: ImageData,
    device: torch.device,
    *,
    l2: float = 1e-3,
    iters: int = 200,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Fit a probe on the frozen features of the labelled training split and test it.

    Returns train and test accuracy, the feature size and the backbone's mean test NFE."""
    train, _ = extract_features(backbone, data, data.train, device, batch_size=batch_size)
    test, solves = features_and_solves(backbone, data, data.test, device, batch_size=batch_size)
    probe = fit_linear_probe(train, data.train.labels, data.classes, l2=l2, iters=iters)
    return {
        "train_accuracy": probe.accuracy(train, data.train.labels),
        "test_accuracy": probe.accuracy(test, data.test.labels),
        "feature_dim": train.shape[1],
        "forward_nfe": None if solves is None else solves["forward_nfe"],
        "test_residual": None if solves is None else solves["residual"],
        "test_converged": None if solves is None else solves["converged"],
    }
