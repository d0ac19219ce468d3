"""Monotone operator equilibrium networks (Winston & Kolter, 2020): cells whose equilibrium
exists and is unique by construction, and the structure the splitting solvers
("forward_backward", "peaceman_rachford") use."""

from .conv import ConvMonotoneOperator, MonotoneConvCell
from .dense import DenseMonotoneOperator, MonotoneLinearCell
from .parametrization import DEFAULT_MARGIN
from .splitting import EquilibriumMap, MonotoneCell, MonotoneOperator, MonotoneSplitting

__all__ = [
    "DEFAULT_MARGIN",
    "ConvMonotoneOperator",
    "DenseMonotoneOperator",
    "EquilibriumMap",
    "MonotoneCell",
    "MonotoneConvCell",
    "MonotoneLinearCell",
    "MonotoneOperator",
    "MonotoneSplitting",
]
