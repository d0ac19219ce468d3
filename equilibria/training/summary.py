"""What every run's `summary.json` shares: its name, and the machine its numbers came from."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

SUMMARY = "summary.json"


def machine() -> dict[str, Any]:
    """The machine a number was measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": [round(v, 2) for v in load] if load else None,
    }
