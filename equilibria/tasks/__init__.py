"""Tasks: the contract every task fulfils (`Task`), the registry of tasks and its look-ups.

`get_task(name)` loads a task's module only when asked; `run_task` (in `tasks.run`) trains any
of them. Adding a task is one package that defines a `TASK` and one line in `registry.TASKS`.
"""

from __future__ import annotations

import importlib

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
    "Sample",
    "SampleRequest",
    "SolverInputs",
    "SolverRequest",
    "Task",
    "get_task",
    "task_for",
    "tasks_with",
]
