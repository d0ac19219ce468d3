"""Character-level language modelling: training (`equilibria train --task lm`) and generation.

`task.TASK` is the task (trained by `tasks.run.run_task`); `model.build_language_model` builds
the network a config describes; `generate.generate` writes text from a trained model.
"""

from .generate import Generation, generate
from .model import build_language_model

__all__ = ["Generation", "build_language_model", "generate"]
