"""Tasks: the contract every task fulfils (`Task`), the registry of tasks and its look-ups.

`get_task(name)` loads a task's module only when asked; `run_task` (in `tasks.run`) trains any
of them, and `load_run` (in `tasks.loading`) reads a saved run of any of them back for one's own
code. Adding a task is one package that defines a `TASK` and one line in `registry.TASKS`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError
from .contract import (
    CAPABILITIES,
    EvalRequest,
    Evaluation,
    Sample,
    SampleRequest,
    SolverInputs,
    SolverRequest,
    Task,
)
from .registry import TASKS

# names loaded on first use: `loading` reads configs, and the config imports this package's
# registry, so importing it here would be a cycle
LAZY = {"LoadedRun": "loading", "load_run": "loading"}


def __getattr__(name: str) -> Any:
    """`load_run` and `LoadedRun`, imported from `tasks.loading` on first use."""
    if name in LAZY:
        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *LAZY])


def get_task(name: str) -> Task:
    """The task registered as `name` (a ConfigError naming the valid ones otherwise)."""
    if name not in TASKS:
        raise ConfigError(f"run.task={name!r} is not valid; tasks are {', '.join(TASKS)}")
    task = importlib.import_module(TASKS[name]).TASK
    if not isinstance(task, Task) or task.name != name:
        raise TypeError(f"{TASKS[name]}.TASK must be the Task named {name!r}")
    return task


def tasks_with(capability: str) -> list[Task]:
    """The registered tasks that offer `capability` (one of `CAPABILITIES`)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; capabilities: {CAPABILITIES}")
    return [task for task in map(get_task, TASKS) if getattr(task, capability) is not None]


def task_for(path: object, name: str, capability: str, command: str) -> Task:
    """The task of the run at `path` (of task `name`), which `command` needs to offer
    `capability`: a ConfigError naming the tasks that do, otherwise."""
    task = get_task(name)
    if getattr(task, capability) is None:
        able = [
            f"{t.noun} (a run of 'equilibria train --task {t.name}')"
            for t in tasks_with(capability)
        ]
        raise ConfigError(
            f"{path} holds a run of task {name!r}; {command} needs {' or '.join(able)}"
        )
    return task


__all__ = [
    "CAPABILITIES",
    "TASKS",
    "EvalRequest",
    "Evaluation",
    "LoadedRun",
    "Sample",
    "SampleRequest",
    "SolverInputs",
    "SolverRequest",
    "Task",
    "get_task",
    "load_run",
    "task_for",
    "tasks_with",
]
