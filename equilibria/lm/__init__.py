"""Character-level language modelling: training (`equilibria train --task lm`) and generation.

`run.train` is the task's entry point; `model.build_language_model` builds the network a config
describes; `generate.generate` writes text from a trained model.
"""

from .generate import Generation, generate
from .model import build_language_model

__all__ = ["Generation", "build_language_model", "generate"]
