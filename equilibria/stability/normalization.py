"""Weight and spectral normalization for cell layers, computed once per DEQ forward.

Both are PyTorch's own parametrizations (`torch.nn.utils.parametrizations`). A solver applies the
cell dozens of times per forward; `parametrizations_cached` (which `eq.DEQ` enters on every call)
evaluates each normalized weight once, inside `torch.nn.utils.parametrize.cached()`, and every
solver iteration and the differentiable f(z*) application reuse that one tensor. The cache ends
with the call, so nothing has to be reset by hand between training steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn
from torch.nn.utils import parametrizations, parametrize

from ..errors import check_positive_int

# layers whose `weight` is normalized by default
NORMALIZED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def _layers(
    module: nn.Module, name: str, types: Sequence[type[nn.Module]], what: str
) -> list[nn.Module]:
    """Every submodule of `module` (itself included) of `types` that has a tensor `name`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{what} needs an nn.Module, got {type(module).__name__}")
    types = tuple(types)
    found = []
    for path, layer in module.named_modules():
        if not isinstance(layer, types) or not hasattr(layer, name):
            continue
        if parametrize.is_parametrized(layer, name):
            existing = type(layer.parametrizations[name][0]).__name__
            raise ValueError(
                f"{what}: {path or type(module).__name__}.{name} is already parametrized by "
                f"{existing}; remove it first with "
                "torch.nn.utils.parametrize.remove_parametrizations"
            )
        found.append(layer)
    if not found:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"{what} found no layer with a tensor {name!r} among the types ({names}) in "
            f"{type(module).__name__}; pass types=(...) to choose other layer types"
        )
    return found


def weight_norm(
    module: nn.Module,
    *,
    name: str = "weight",
    dim: int | None = 0,
    types: Sequence[type[nn.Module]] = NORMALIZED_LAYERS,
) -> nn.Module:
    """Weight-normalize `module` and every layer of `types` inside it: w = g v / ||v||.

    Uses `torch.nn.utils.parametrizations.weight_norm` (the norm over every dimension but
    `dim`, per output unit by default); the weights keep their current values. Returns `module`.

    Example:
        >>> cell = eq.weight_norm(MyCell(64))  # every Linear / Conv inside is normalized
    """
    for layer in _layers(module, name, types, "weight_norm"):
        parametrizations.weight_norm(layer, name=name, dim=dim)
    return module


def spectral_norm(
    module: nn.Module,
    *,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    types: Sequence[type[nn.Module]] = NORMALIZED_LAYERS,
) -> nn.Module:
    """Spectral-normalize `module` and every layer of `types` inside it: w / sigma_max(w).

    Uses `torch.nn.utils.parametrizations.spectral_norm`: each evaluation in training mode runs
    `n_power_iterations` steps of its power iteration, so inside a DEQ (one evaluation per
    forward) the estimate advances once per training step. Returns `module`.
    """
    check_positive_int("spectral_norm n_power_iterations", n_power_iterations)
    for layer in _layers(module, name, types, "spectral_norm"):
        parametrizations.spectral_norm(
            layer, name=name, n_power_iterations=n_power_iterations, eps=eps
        )
    return module


def parametrized_tensors(module: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(layer, tensor name) for every parametrized tensor in `module`."""
    for layer in module.modules():
        if parametrize.is_parametrized(layer):
            for name in layer.parametrizations:
                yield layer, name


@contextmanager
def parametrizations_cached(module: nn.Module) -> Iterator[None]:
    """Evaluate every parametrized tensor of `module` once and reuse it until the block ends.

    The tensors are computed on entry under the caller's grad mode, so a block entered with
    autograd on yields weights that carry gradients to their original parameters even when they
    are then used under `torch.no_grad()` (as a DEQ's forward solve is). Nested blocks share the
    outermost block's tensors (PyTorch's `parametrize.cached()` semantics).
    """
    with parametrize.cached():
        for layer, name in parametrized_tensors(module):
            getattr(layer, name)
        yield
