"""Stability and training toolkit for equilibrium models.

- `normalization`: weight / spectral normalization computed once per DEQ forward.
- `dropout`: variational dropout, one mask per forward solve.
"""

from .dropout import VariationalDropout, VariationalDropout1d, VariationalDropout2d, masks_held
from .normalization import parametrizations_cached, spectral_norm, weight_norm

__all__ = [
    "VariationalDropout",
    "VariationalDropout1d",
    "VariationalDropout2d",
    "masks_held",
    "parametrizations_cached",
    "spectral_norm",
    "weight_norm",
]
