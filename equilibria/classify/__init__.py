"""Image classification (`equilibria train`, the default task): the training loop, one step and
one evaluation pass, the test-time compute sweep, the report, and evaluating a saved run.

`task.TASK` is what the task registry finds here.
"""

from .analysis import elastic_sweep, residual_traces
from .engine import evaluate, train_step
from .trainer import Trainer

__all__ = ["Trainer", "elastic_sweep", "evaluate", "residual_traces", "train_step"]
