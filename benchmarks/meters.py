"""Memory meters: bytes saved for backward, peak tensor memory and peak process memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from .timing import synchronize


class SavedTensorBytes:
    """Context manager counting the bytes autograd saves for backward inside it.

    Every storage is counted once however many times it is saved (a weight used at every
    depth of a weight-tied network is one storage); storages of `exclude` (typically the
    parameters) are not counted, so the total is the activation memory a backward pass needs.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {_storage_key(t) for t in exclude}
        self._seen: set[tuple[str, int]] = set()
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in self._seen and key not in self._excluded:
            self._seen.add(key)
            self.bytes += tensor.untyped_storage().nbytes()
        return tensor

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to the process's stderr to /dev/null inside the block (the
    profiler's C++ layer logs a start and stop line per use); Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_tensor_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """The most tensor memory alive at once while `fn` runs, above what was alive before.

    On CUDA this is the caching allocator's peak; on CPU the peak of the allocation and free
    events that the PyTorch profiler records. None when neither is available.
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with (
        native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # this torch's profiler exposes no raw event stream
        return None
    changes = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    alive = peak = 0
    for _, nbytes in changes:
        alive += nbytes
        peak = max(peak, alive)
    return peak


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _return_free_memory() -> None:
    """Hand memory that glibc holds in its free lists back to the system, where possible."""
    name = ctypes.util.find_library("c")
    if name:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def peak_rss_bytes(fn: Callable[[], object]) -> int | None:
    """How far the process's resident memory rose above its starting level while `fn` ran.

    Uses Linux's resettable high-water mark (/proc/self/clear_refs, VmHWM); None elsewhere.
    """
    try:
        gc.collect()
        _return_free_memory()
        _CLEAR_REFS.write_text("5")
        base = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - base) * 1024
    except (OSError, KeyError):
        return None
