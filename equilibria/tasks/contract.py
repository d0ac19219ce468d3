"""The contract every task fulfils: what `run_task` needs to train it, and what it can do after.

A task names its data, its model, its trainer (an `EpochLoop`), how a finished run is summed up
(`finalize`) and said in one line (`headline`). The capabilities are optional: a task that can
`evaluate` a saved run, give the DEQ inputs a learned solver trains on (`solver_inputs`) or
`sample` from a trained model offers a function for it, and the command line offers the matching
command (`eval`, `train-solver`, `sample`) for its runs; a task that can `load_model` lets
`load_run` hand its trained model to one's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ..config import Config
    from ..training.distributed import Runtime
    from ..training.loop import EpochLoop


@dataclass(frozen=True)
class EvalRequest:
    """What `equilibria eval` asks of a saved run: `solve` holds the solver settings given
    (the solver "neural" means the one saved beside the checkpoint); `sweep` the iteration
    caps to evaluate at instead; `split` is "test" or "train"; `plot` says a sweep plot is
    wanted (so its package is checked before any work). The fields after `plot` are what only
    some tasks read (`Task.eval_options` names them): puzzles from a file (`data_file`), the
    difficulties to test (`sizes`), several starts per puzzle (`starts`, kept by `select`:
    "residual" or "vote"), and the folder for pictures of the answers (`out`)."""

    path: Path
    checkpoint: dict
    solve: dict[str, Any]
    sweep: list[int] | None = None
    split: str = "test"
    batch_size: int | None = None
    device: str | None = None
    data_dir: str | None = None
    plot: bool = False
    # read only by the tasks that list them in `Task.eval_options`
    data_file: Path | None = None
    sizes: tuple[int, ...] | None = None
    starts: int = 1
    select: str = "residual"
    out: Path | None = None


@dataclass
class Evaluation:
    """What an evaluation found: `rows` (one, or one per cap of a sweep), each printed by
    `row_text(label, row)` under `heading` ("PATH on DATA SPLIT ... (settings):" follows from
    it); `label` names a row without a cap; `record` holds extra entries of eval.json and
    `plot(folder)` draws a sweep there. `is_main` is false on the other processes of a
    distributed evaluation, which print nothing."""

    heading: str
    rows: list[dict[str, Any]]
    label: str
    row_text: Callable[[str, Mapping[str, Any]], str]
    solve: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    plot: Callable[[Path], None] | None = None
    is_main: bool = True


@dataclass(frozen=True)
class SolverRequest:
    """What `equilibria train-solver` asks of a saved run: the DEQ inputs of `batches` training
    batches of `batch_size` samples (None: the task's default) on `device`."""

    path: Path
    checkpoint: dict
    config: Config
    device: Any
    batches: int
    batch_size: int | None = None
    data_dir: str | None = None


@dataclass
class SolverInputs:
    """The frozen model, the inputs its DEQ layer receives, and the shape of the initializer
    that suits them (`init_width` hidden channels; `init_skip`: also a linear path)."""

    model: nn.Module
    inputs: list[Any]
    init_width: int
    init_skip: bool = True


@dataclass(frozen=True)
class SampleRequest:
    """What `equilibria sample` asks of a saved run (`prompt` None: the task's default)."""

    path: Path
    checkpoint: dict
    device: str | None
    prompt: str | None
    length: int
    temperature: float
    top_k: int | None
    seed: int
    warm_start: bool


@dataclass
class Sample:
    """What was generated: the prompt used, the continuation, and the mean forward NFE per
    generated element (None: the model runs no solver)."""

    prompt: str
    text: str
    mean_nfe: float | None


@dataclass(frozen=True)
class Task:
    """One kind of training run (`run.task`).

    `noun` says what a run of it produces ("a language model"); `section` is the config section
    of its own settings (None: it has none). `load_data(config)` and `build_model(config, data)`
    make what `trainer(config, data, model, runtime, out, checkpoint=, on_step=, log=)` trains;
    `announce(config, data, trainer, out)` is the line logged before training starts;
    `finalize(config, data, trainer, out)` writes the report of a finished run and returns its
    summary (None on the other processes); `headline(summary)` says it in one line.
    `check(config, runtime, checkpoint)` refuses what the task cannot run, before any work;
    `explicit_model(config)` describes a model that runs no solver (None: it solves for an
    equilibrium); `run_name(config)` names the default output folder; `resolve(config)` fills
    in the settings left at none whose value depends on the task's own settings (a puzzle
    family's sizes and training cap), so that `config.json` records what the run trained with.

    `load_model(config, checkpoint)` (the stored config, the checkpoint's contents) is the
    trained model, in eval mode on the CPU (the weight average when the run kept one), built
    without the training data; `model_data(config, checkpoint)` is what one's own inputs are
    made with (an `ImageData` holding no images, a `Vocabulary`, ...). `eval_options` names
    the fields of `EvalRequest` beyond the common ones that its `evaluate` reads (`equilibria
    eval` refuses the others for its runs, naming the tasks that read them).
    """

    name: str
    noun: str
    section: str | None
    load_data: Callable[[Config], Any]
    build_model: Callable[[Config, Any], nn.Module]
    trainer: Callable[..., EpochLoop]
    announce: Callable[[Config, Any, Any, Path], str]
    finalize: Callable[[Config, Any, Any, Path], dict[str, Any] | None]
    headline: Callable[[dict[str, Any]], str]
    check: Callable[[Config, Runtime, dict | None], None] | None = None
    explicit_model: Callable[[Config], str | None] | None = None
    run_name: Callable[[Config], str] | None = None
    resolve: Callable[[Config], Config] | None = None
    reads_images: bool = True
    eval_options: tuple[str, ...] = ()
    # optional capabilities
    evaluate: Callable[[EvalRequest], Evaluation] | None = None
    solver_inputs: Callable[[SolverRequest], SolverInputs] | None = None
    sample: Callable[[SampleRequest], Sample] | None = None
    load_model: Callable[[Config, dict], nn.Module] | None = None
    model_data: Callable[[Config, dict], Any] | None = None

    def describe_model(self, config: Config) -> str | None:
        """What `explicit_model` says of the config's model (None: an equilibrium model)."""
        return self.explicit_model(config) if self.explicit_model is not None else None

    def folder_name(self, config: Config) -> str:
        """The start of the default output folder's name (a time stamp follows)."""
        return self.run_name(config) if self.run_name is not None else self.name


CAPABILITIES = ("evaluate", "solver_inputs", "sample", "load_model")
