"""The registry of tasks: one line per task, `run.task` name -> the module holding its `TASK`.

This module imports nothing, so the config can take its valid task names from here.
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    "classify": "equilibria.classify.task",
    "lm": "equilibria.lm.task",
    "ssl": "equilibria.ssl.task",
    "puzzles": "equilibria.puzzles.task",
}
