"""Timing on a shared machine: warm-up, interleaved runs, medians and ratios.

Candidates are timed in alternating order within one process, so a burst of load from other
jobs hits all of them alike; comparisons use the median over rounds of the per-round ratio.
With one CPU thread the clock is the thread's CPU time, which does not count the time the
process waits while other jobs hold the cores; otherwise it is wall-clock time.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from equilibria.errors import check_positive_int

CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_once(
    fn: Callable[[], object], device: torch.device, clock: Clock = time.perf_counter
) -> float:
    """Seconds one call of `fn` takes on `clock`, device work included."""
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


@dataclass
class Timings:
    """Seconds per call of each candidate, one sample per round."""

    samples: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of time(name) / time(baseline)."""
        pairs = zip(self.samples[name], self.samples[baseline], strict=True)
        return statistics.median(a / b for a, b in pairs)


def interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    device: torch.device = CPU,
    clock: Clock = time.perf_counter,
) -> Timings:
    """Time every candidate `repeats` times, rotating their order each round.

    Each candidate first runs `warmup` times untimed; the garbage collector is paused while
    timing so that its pauses do not land on one candidate.
    """
    check_positive_int("repeats", repeats)
    check_positive_int("warmup", warmup, minimum=0)
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(time_once(candidates[name], device, clock))
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timings(samples)


class Stopwatch:
    """Adds up the time spent inside `with stopwatch:` blocks, device work included."""

    def __init__(self, device: torch.device = CPU, clock: Clock = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._start = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds += self.clock() - self._start
