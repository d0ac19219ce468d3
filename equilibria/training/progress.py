"""The per-epoch progress bar: running loss, accuracy, forward NFE and residual."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ..extras import require
from .metrics import Meter


class ProgressBar:
    """A tqdm bar over the steps of one epoch (nothing at all when `enabled` is false)."""

    def __init__(self, total: int, *, initial: int, description: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            tqdm = require("tqdm", "progress bars").tqdm
            self._bar = tqdm(
                total=total, initial=initial, desc=description, leave=False, dynamic_ncols=True
            )

    def update(self, meter: Meter) -> None:
        """Advance one step and show the epoch's running means."""
        if self._bar is None:
            return
        means = meter.means()
        postfix = {
            "loss": f"{means['train_loss']:.3f}",
            "acc": f"{100 * means['train_accuracy']:.1f}%",
        }
        if meter.forward_nfe:
            postfix["nfe"] = f"{means['train_forward_nfe']:.1f}"
            postfix["res"] = f"{means['train_residual']:.1e}"
        if meter.adjoint_solves:
            postfix["adjoint res"] = f"{means['train_adjoint_residual']:.1e}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
