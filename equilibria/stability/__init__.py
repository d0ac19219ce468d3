"""Stability and training toolkit for equilibrium models.

- `jacobian`: the Jacobian penalty (Hutchinson estimate of ||J_f(z*)||_F^2 / dim); the sum
  over a model's layers is `eq.jacobian_loss`, next to `eq.DEQ`.
- `spectral`: spectral radius of J_f at a state, by block power iteration.
- `normalization`: weight / spectral normalization computed once per DEQ forward.
- `dropout`: variational dropout, one mask per forward solve.
- `correction`: fixed-point correction (losses on states along the solve).
- `warmstart`: a per-sample cache of fixed points for revisited data.
- `pretrain`: the unrolled pretraining phase; `jitter`: random iteration caps in training.
- `draws`: training decisions (penalty on/off, caps) drawn alike on every process.
"""

from .correction import CorrectionStates, FixedPointCorrection
from .draws import shared_draws
from .dropout import VariationalDropout, VariationalDropout1d, VariationalDropout2d, masks_held
from .jacobian import JacobianPenalty, hutchinson_frobenius
from .jitter import jittered_cap
from .normalization import parametrizations_cached, spectral_norm, weight_norm
from .pretrain import Pretrain, unroll
from .spectral import spectral_radius
from .warmstart import FixedPointCache

__all__ = [
    "CorrectionStates",
    "FixedPointCache",
    "FixedPointCorrection",
    "JacobianPenalty",
    "Pretrain",
    "VariationalDropout",
    "VariationalDropout1d",
    "VariationalDropout2d",
    "hutchinson_frobenius",
    "jittered_cap",
    "masks_held",
    "parametrizations_cached",
    "shared_draws",
    "spectral_norm",
    "spectral_radius",
    "unroll",
    "weight_norm",
]
