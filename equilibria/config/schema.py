"""The training config: typed sections, every key with a default, help text and limits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..backward import BACKWARDS
from ..data import DATASETS as IMAGE_DATASETS
from ..models.build import ARCHITECTURES
from ..models.initializers import INITS
from ..solvers import SOLVERS
from ..tasks.registry import TASKS as TASK_MODULES
from .fields import ConfigError, Section, option
from .lm import LMConfig
from .puzzles import PuzzlesConfig
from .ssl import SSLConfig

MODELS = tuple(ARCHITECTURES)
DEQ_MODELS = tuple(name for name, arch in ARCHITECTURES.items() if arch.equilibrium)
DATASETS = tuple(IMAGE_DATASETS)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")
STOP_MODES = ("rel", "abs")
TASKS = tuple(TASK_MODULES)
TRAIN_BACKWARDS = tuple(name for name in BACKWARDS if name != "unrolled")
AnySection = TypeVar("AnySection", bound=Section)


@dataclass(frozen=True)
class ModelConfig(Section):
    name: ClassVar[str] = "model"

    arch: str = option(
        "mdeq",
        "mdeq (the multiscale DEQ), resnet (an explicit baseline) or monotone (a monotone "
        "operator DEQ, one resolution of channels[0])",
        choices=MODELS,
    )
    channels: tuple[int, ...] = option(
        (24, 24), "channels per resolution branch, highest resolution first", minimum=1
    )
    expansion: int = option(4, "hidden channels of a branch block, as a multiple", minimum=1)
    groups: int = option(4, "GroupNorm groups (must divide every channel count)", minimum=1)
    dropout: float = option(
        0.0, "variational dropout rate (one mask per solve)", minimum=0.0, maximum=0.9
    )
    residual: bool = option(
        False, "mdeq only: identity shortcut in the branch blocks (the paper's; slower solves)"
    )
    weight_norm: bool = option(True, "weight normalization of the cell's convolutions")
    head_channels: int = option(64, "channels of the classification head", minimum=1)
    stem_stride: int = option(
        1, "stride of the stem's first conv (2: solve at half the image resolution)", minimum=1
    )
    head_grid: int = option(
        4, "the head averages its map to a grid of this size (1: global average)", minimum=1
    )
    resnet_blocks: int = option(2, "resnet only: residual blocks per resolution stage", minimum=1)
    monotone_margin: float = option(
        0.05, "monotone only: the margin m of W = (1 - m) I - A^T A + B - B^T", above=0.0
    )

    def check(self) -> None:
        bad = sorted({c for c in self.channels if c % self.groups})
        if bad:
            raise ConfigError(
                f"model.groups={self.groups} must divide every entry of model.channels "
                f"{list(self.channels)}, but {', '.join(map(str, bad))} is not a multiple of it"
            )
        if not self.channels:
            raise ConfigError("model.channels needs at least one entry (one per resolution)")


# what a key left at none is for each task, by section ("*": every other task). The language
# model keeps its validation loss only with the exact (implicit) gradient, and with it needs a
# cap of 10 to keep its training solves at the tolerance; images and contrastive features train
# as well with the one-step gradient at a fraction of its cost (benchmarks: equilibrium-defaults).
# Image classifiers train on batches of 64, whose epochs two CPU threads run about twice as fast
# as batches of 32 at the same accuracy (benchmarks: equilibrium-defaults, the digits runs).
# Puzzles train at a cap that grows with the difficulty they train on: a value of None leaves the
# key for the task to resolve (the puzzle family's cap, `equilibria.puzzles.families`); they
# train without the Jacobian penalty, which slows the long-range propagation
# their answers need; their batch is the family's too (benchmarks: puzzles)
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "deq": {
        "backward": {"lm": "implicit", "puzzles": "phantom", "*": "onestep"},
        "max_iter": {"lm": 10, "puzzles": None, "*": 8},
        "jacobian_gamma": {"puzzles": 0.0, "*": 2.0},
    },
    "data": {"batch_size": {"classify": 64, "puzzles": None, "*": 32}},
    # exact-match answers: no label smoothing, and the gentler rate the puzzle cells train at
    "optim": {"lr": {"puzzles": 2e-3, "*": 1e-2}, "label_smoothing": {"puzzles": 0.0, "*": 0.1}},
}


def task_default(section: str, key: str, task: str) -> Any:
    """The value of `section`.`key` for a run of `task` whose config leaves it at none."""
    by_task = TASK_DEFAULTS[section][key]
    return by_task.get(task, by_task["*"])


def _by_task(section: str, key: str) -> str:
    """'none: the task's, implicit for lm, else onestep', for a help text."""
    by_task = TASK_DEFAULTS[section][key]
    named = ", ".join(
        f"{'its own' if value is None else value} for {task}"
        for task, value in by_task.items()
        if task != "*"
    )
    return f"none: the task's, {named}, else {by_task['*']}"


def with_task_defaults(section: AnySection, task: str) -> AnySection:
    """`section` with each of its `TASK_DEFAULTS` keys that is none set to `task`'s value."""
    keys = TASK_DEFAULTS.get(section.name, {})
    unset = [key for key in keys if getattr(section, key) is None]
    return dataclasses.replace(
        section, **{key: task_default(section.name, key, task) for key in unset}
    )


# the settings that only one gradient uses: given with another, they would be silently ignored
SETTINGS_OF_BACKWARD = {
    "implicit": ("backward_solver", "backward_tol", "backward_max_iter"),
    "phantom": ("phantom_steps", "phantom_tau"),
    "reversible": ("reversible_b", "reversible_checkpoint", "reversible_precision"),
}


@dataclass(frozen=True)
class DEQConfig(Section):
    name: ClassVar[str] = "deq"

    solver: str = option("anderson", "forward solver", choices=tuple(SOLVERS))
    tol: float = option(1e-3, "forward tolerance", minimum=0.0)
    stop_mode: str = option("rel", "residual measure: rel or abs", choices=STOP_MODES)
    max_iter: int | None = option(
        None, f"forward iteration cap in training ({_by_task('deq', 'max_iter')})", minimum=1
    )
    eval_solver: str | None = option(
        None, "solver at test time (none: as solver)", choices=tuple(SOLVERS)
    )
    eval_tol: float | None = option(None, "tolerance at test time (none: as tol)", minimum=0.0)
    eval_max_iter: int | None = option(
        12, "iteration cap at test time (none: as max_iter)", minimum=1
    )
    backward: str | None = option(
        None,
        "gradient: onestep (one differentiated cell application at the fixed point; cheap, "
        "inexact), implicit (the adjoint solve), phantom, or reversible (its own reversible "
        f"iteration instead of the solver, exact gradient) ({_by_task('deq', 'backward')})",
        choices=TRAIN_BACKWARDS,
    )
    backward_solver: str | None = option(
        None,
        "implicit only: adjoint solver (none: the damped fixed-point iteration)",
        choices=tuple(SOLVERS),
    )
    backward_tol: float | None = option(
        None, "implicit only: adjoint tolerance (none: as tol)", minimum=0.0
    )
    backward_max_iter: int | None = option(
        8, "implicit only: adjoint cap (none: as max_iter)", minimum=1
    )
    phantom_steps: int = option(5, "phantom only: damped unrolled steps", minimum=1)
    phantom_tau: float = option(0.6, "phantom only: damping", above=0.0, maximum=1.0)
    reversible_b: float = option(
        0.5, "reversible only: relaxation b, in (0, 2) and not 1", above=0.0, maximum=2.0
    )
    reversible_checkpoint: int | None = option(
        None,
        "reversible only: steps between kept states (none: automatic, from b and the dtypes)",
        minimum=1,
    )
    reversible_precision: str = option(
        "float64",
        "reversible only: dtype of the iteration's states: float64, or native (the cell's)",
        choices=("float64", "native"),
    )
    pretrain_steps: int = option(0, "training steps of unrolled pretraining first", minimum=0)
    pretrain_depth: int = option(6, "cell applications in unrolled pretraining", minimum=1)
    jacobian_gamma: float | None = option(
        None,
        "weight of the Jacobian penalty, which keeps solves converging (0: off; "
        f"{_by_task('deq', 'jacobian_gamma')})",
        minimum=0.0,
    )
    jacobian_p: float = option(
        0.2, "fraction of steps computing the penalty", minimum=0.0, maximum=1.0
    )
    iteration_jitter: int = option(
        0, "training caps drawn from [max_iter - jitter, max_iter]", minimum=0
    )
    residual_warning: float = option(
        1e-2,
        "warn (epoch line, summary.json) when an epoch's mean training residual is above it "
        "(0: never)",
        minimum=0.0,
    )
    init: str = option(
        "zeros",
        "start of each solve: zeros, or joint (a small network trained with the model guesses it)",
        choices=INITS,
    )
    init_weight: float = option(1.0, "joint only: weight of the initializer's fit loss", above=0.0)
    reuse: bool = option(
        False,
        "start each training example's solve from its fixed point of the previous epoch "
        "(image models that solve for an equilibrium)",
    )

    def for_task(self, task: str) -> DEQConfig:
        """These settings as a run of `task` trains with them: each key of `TASK_DEFAULTS`
        left at none takes the task's value. Raises on settings of a gradient the run does not
        train with (they would be silently ignored)."""
        resolved = with_task_defaults(self, task)
        for backward, names in SETTINGS_OF_BACKWARD.items():
            unused = self.changed(names) if resolved.backward != backward else []
            if unused:
                how = "" if self.backward else f" (run.task={task}'s, as deq.backward is none)"
                raise ConfigError(
                    f"{', '.join(unused)} only applies with deq.backward={backward}, and this "
                    f"config trains with deq.backward={resolved.backward}{how}; set "
                    f"deq.backward={backward} or leave {'them' if len(unused) > 1 else 'it'} out"
                )
        return resolved

    def check(self) -> None:
        if self.reversible_b in (1.0, 2.0):
            raise ConfigError(
                f"deq.reversible_b={self.reversible_b} must lie in (0, 2) and differ from 1 "
                "(at 1 a step cannot be undone)"
            )
        if self.reuse and self.init != "zeros":
            raise ConfigError(
                f"deq.reuse=true and deq.init={self.init} both choose where training solves "
                "start; set deq.init=zeros or deq.reuse=false"
            )
        if self.max_iter and self.iteration_jitter and self.iteration_jitter >= self.max_iter:
            raise ConfigError(
                f"deq.iteration_jitter={self.iteration_jitter} must be smaller than "
                f"deq.max_iter={self.max_iter}"
            )


@dataclass(frozen=True)
class DataConfig(Section):
    name: ClassVar[str] = "data"

    dataset: str = option("digits", "data set", choices=DATASETS)
    data_dir: str = option("~/.cache/equilibria/data", "folder with (or for) data files")
    download: bool = option(True, "download missing files when online")
    train_samples: int | None = option(
        None, "use only the first N training samples (none: all; for quick trials)", minimum=1
    )
    batch_size: int | None = option(
        None,
        f"training batch, over all processes together ({_by_task('data', 'batch_size')})",
        minimum=1,
    )
    eval_batch_size: int = option(512, "test batch per process", minimum=1)
    shift: int = option(1, "random translation in pixels in training (0: off)", minimum=0)
    flip: bool = option(False, "random horizontal flips in training")


@dataclass(frozen=True)
class OptimConfig(Section):
    name: ClassVar[str] = "optim"

    optimizer: str = option("adam", "adam, adamw or sgd", choices=OPTIMIZERS)
    lr: float | None = option(None, f"peak learning rate ({_by_task('optim', 'lr')})", above=0.0)
    weight_decay: float = option(0.0, "weight decay", minimum=0.0)
    momentum: float = option(0.9, "sgd only: momentum", minimum=0.0, maximum=1.0)
    epochs: int = option(20, "training epochs", minimum=1)
    schedule: str = option("cosine", "learning-rate schedule after warm-up", choices=SCHEDULES)
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs", minimum=0.0)
    grad_clip: float = option(1.0, "clip the global gradient norm (0: off)", minimum=0.0)
    label_smoothing: float | None = option(
        None, f"label smoothing ({_by_task('optim', 'label_smoothing')})", minimum=0.0, maximum=0.5
    )
    average: float = option(
        0.0,
        "decay of a moving average of the weights, which is tested (0: off)",
        minimum=0.0,
        maximum=0.9999,
    )


@dataclass(frozen=True)
class RunConfig(Section):
    name: ClassVar[str] = "run"

    task: str = option(
        "classify",
        "classify (image classes), lm (character language model), ssl (contrastive "
        "pre-training with a linear probe) or puzzles (reasoning puzzles that get harder)",
        choices=TASKS,
    )
    seed: int = option(0, "seed of weights, data order, augmentation and dropout", minimum=0)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("fp32", "fp32, or bf16 autocast", choices=PRECISIONS)
    threads: int = option(0, "CPU threads (0: torch's default)", minimum=0)
    progress: bool = option(True, "progress bars")
    sweep: tuple[int, ...] = option(
        (1, 2, 3, 4, 6, 8, 12, 16, 24), "test-time iteration caps for accuracy vs NFE", minimum=1
    )
    trace_iters: int = option(40, "solver iterations of the residual-trace plot", minimum=1)

    def check(self) -> None:
        device = self.device
        if device not in ("auto", "cpu", "cuda") and not (
            device.startswith("cuda:") and device[5:].isdigit()
        ):
            raise ConfigError(f"run.device={device!r} is not valid; use auto, cpu, cuda or cuda:N")


SECTIONS: tuple[type[Section], ...] = (
    ModelConfig,
    DEQConfig,
    DataConfig,
    OptimConfig,
    RunConfig,
    LMConfig,
    SSLConfig,
    PuzzlesConfig,
)
