"""The inputs a model's DEQ layer receives: what a learned solver for that model trains on."""

from __future__ import annotations

from typing import Any

import torch

from ..deq import DEQ
from ..errors import ConfigError


def find_deq(model: torch.nn.Module) -> DEQ:
    """The model's (first) DEQ layer."""
    for module in model.modules():
        if isinstance(module, DEQ):
            return module
    raise ConfigError("the model holds no DEQ layer, so there is no solver to learn")


def deq_inputs(model: torch.nn.Module, deq: DEQ, batches: list[torch.Tensor]) -> list[Any]:
    """The inputs x that `deq` receives when `model` runs on each batch (images or tokens):
    tensors, or tuples of tensors for a DEQ-Transformer."""
    seen: list[Any] = []

    def detached(x: Any) -> Any:
        return tuple(detached(part) for part in x) if isinstance(x, tuple) else x.detach()

    handle = deq.register_forward_pre_hook(lambda module, args: seen.append(detached(args[0])))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch, max_iter=1, on_failure="ignore")
    finally:
        handle.remove()
    return seen
