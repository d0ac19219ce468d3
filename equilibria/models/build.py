"""Models from a config: the keyword arguments of a DEQ, and the registry of image classifiers
(`ARCHITECTURES`, the one list of `model.arch` names)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from ..backward import Implicit, Phantom, make_backward
from ..errors import ConfigError
from ..reversible import Reversible
from ..stability import JacobianPenalty, Pretrain
from .mdeq import MDEQ
from .monotone import MonotoneNet
from .resnet import ResNet

if TYPE_CHECKING:
    from ..config import Config


def deq_options(config: Config) -> dict:
    """Keyword arguments of `eq.DEQ` for the [deq] section of a config."""
    deq = config.deq.for_task(config.run.task)
    if deq.backward == "implicit":
        backward = Implicit(
            deq.backward_solver, tol=deq.backward_tol, max_iter=deq.backward_max_iter
        )
    elif deq.backward == "phantom":
        backward = Phantom(steps=deq.phantom_steps, tau=deq.phantom_tau)
    elif deq.backward == "reversible":
        backward = Reversible(
            deq.reversible_b,
            checkpoint_every=deq.reversible_checkpoint or "auto",
            precision=deq.reversible_precision,
        )
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


def _common(config: Config) -> dict:
    """The [model] settings the MDEQ and the ResNet share."""
    m = config.model
    return dict(
        channels=m.channels,
        expansion=m.expansion,
        groups=m.groups,
        dropout=m.dropout,
        head_channels=m.head_channels,
        head_grid=m.head_grid,
        stem_stride=m.stem_stride,
    )


def mdeq_model(config: Config, shape: tuple[int, int, int], classes: int) -> MDEQ:
    """The multiscale DEQ classifier of a config."""
    m = config.model
    return MDEQ(
        shape[0],
        classes,
        residual=m.residual,
        weight_norm=m.weight_norm,
        **_common(config),
        **deq_options(config),
    )


def resnet_model(config: Config, shape: tuple[int, int, int], classes: int) -> ResNet:
    """The explicit ResNet counterpart of the MDEQ."""
    return ResNet(shape[0], classes, blocks=config.model.resnet_blocks, **_common(config))


def monotone_model(config: Config, shape: tuple[int, int, int], classes: int) -> MonotoneNet:
    """The monotone-operator classifier of a config: one resolution of model.channels[0]
    channels; the adjoint is solved by Peaceman-Rachford unless deq.backward_solver names
    another (the damped iteration can diverge on these cells: their J has no norm bound)."""
    m, deq = config.model, config.deq.for_task(config.run.task)
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


@dataclass(frozen=True)
class Architecture:
    """How to build one `model.arch` for images, and whether it solves for an equilibrium."""

    build: Callable[[Config, tuple[int, int, int], int], nn.Module]
    equilibrium: bool


# one line per image classifier: model.arch -> how to build it
ARCHITECTURES: dict[str, Architecture] = {
    "mdeq": Architecture(mdeq_model, equilibrium=True),
    "resnet": Architecture(resnet_model, equilibrium=False),
    "monotone": Architecture(monotone_model, equilibrium=True),
}


def build_model(config: Config, shape: tuple[int, int, int], classes: int) -> nn.Module:
    """The model a config describes, for images of `shape` (channels, height, width)."""
    return ARCHITECTURES[config.model.arch].build(config, shape, classes)
