"""Image classifiers: the multiscale DEQ (`MDEQ`) and its explicit counterpart (`ResNet`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..backward import Implicit, Phantom, make_backward
from ..errors import ConfigError
from ..stability import JacobianPenalty, Pretrain
from .blocks import BranchBlock, ClassificationHead, MultiscaleFusion, Stem, branch_sizes
from .mdeq import MDEQ, MDEQCell
from .monotone import MonotoneNet
from .resnet import ResNet
from .transformer import DEQTransformer, ExplicitTransformer, TransformerBlock

if TYPE_CHECKING:
    from ..config import Config


def deq_options(config: Config) -> dict:
    """Keyword arguments of `eq.DEQ` for the [deq] section of a config."""
    deq = config.deq
    if deq.backward == "implicit":
        backward = Implicit(
            deq.backward_solver, tol=deq.backward_tol, max_iter=deq.backward_max_iter
        )
    elif deq.backward == "phantom":
        backward = Phantom(steps=deq.phantom_steps, tau=deq.phantom_tau)
    else:
        backward = make_backward(deq.backward)
    options = dict(
        solver=deq.solver,
        tol=deq.tol,
        max_iter=deq.max_iter,
        stop_mode=deq.stop_mode,
        backward=backward,
        eval_solver=deq.eval_solver,
        eval_tol=deq.eval_tol,
        eval_max_iter=deq.eval_max_iter,
        iteration_jitter=deq.iteration_jitter,
        patience=None,
        init=deq.init,
        init_weight=deq.init_weight,
    )
    if deq.jacobian_gamma > 0:
        options["jacobian_penalty"] = JacobianPenalty(gamma=deq.jacobian_gamma, p=deq.jacobian_p)
    if deq.pretrain_steps > 0:
        options["pretrain"] = Pretrain(depth=deq.pretrain_depth, steps=deq.pretrain_steps)
    return options


def build_model(config: Config, shape: tuple[int, int, int], classes: int) -> nn.Module:
    """The model a config describes, for images of `shape` (channels, height, width)."""
    m = config.model
    common = dict(
        channels=m.channels,
        expansion=m.expansion,
        groups=m.groups,
        dropout=m.dropout,
        head_channels=m.head_channels,
        head_grid=m.head_grid,
        stem_stride=m.stem_stride,
    )
    if m.arch == "resnet":
        return ResNet(shape[0], classes, blocks=m.resnet_blocks, **common)
    if m.arch == "monotone":
        return monotone_model(config, shape, classes)
    return MDEQ(
        shape[0],
        classes,
        residual=m.residual,
        weight_norm=m.weight_norm,
        **common,
        **deq_options(config),
    )


def monotone_model(config: Config, shape: tuple[int, int, int], classes: int) -> MonotoneNet:
    """The monotone-operator classifier of a config: one resolution of model.channels[0]
    channels; the adjoint is solved by Peaceman-Rachford unless deq.backward_solver names
    another (the damped iteration can diverge on these cells: their J has no norm bound)."""
    m, deq = config.model, config.deq
    options = deq_options(config)
    if options.pop("init") != "zeros":
        raise ConfigError("deq.init=joint is not available for model.arch=monotone")
    options.pop("init_weight")
    if deq.backward == "implicit" and deq.backward_solver is None:
        options["backward"] = Implicit(
            "peaceman_rachford", tol=deq.backward_tol, max_iter=deq.backward_max_iter
        )
    return MonotoneNet(
        shape[0],
        classes,
        channels=m.channels[0],
        groups=m.groups,
        head_channels=m.head_channels,
        head_grid=m.head_grid,
        stem_stride=m.stem_stride,
        m=m.monotone_margin,
        **options,
    )


__all__ = [
    "MDEQ",
    "BranchBlock",
    "ClassificationHead",
    "MDEQCell",
    "MonotoneNet",
    "MultiscaleFusion",
    "ResNet",
    "Stem",
    "branch_sizes",
    "build_model",
    "deq_options",
    "DEQTransformer",
    "ExplicitTransformer",
    "TransformerBlock",
]

from .inr import DEQINR, FourierFeatures, FourierMLP, SineCell  # noqa: E402

__all__ += ["DEQINR", "FourierFeatures", "FourierMLP", "SineCell"]
