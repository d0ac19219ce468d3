"""`equilibria train-solver CHECKPOINT`: train a learned solver for a saved equilibrium model.

The model (of any task that offers the DEQ inputs of its training data: an MDEQ classifier, a
DEQ-Transformer language model) is frozen; the solver learns from those inputs (no labels) and
is saved beside the checkpoint as `neural_solver.pt`, where `equilibria eval --solver neural`
finds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError
from ..neural import NeuralSolver, SolverTraining, fit_neural_solver
from ..neural.inputs import find_deq
from ..tasks import SolverRequest, task_for
from ..tasks.evaluation import SOLVER_FILENAME
from ..training import distributed
from ..training.checkpoint import find_checkpoint, load_checkpoint, stored_config
from .arguments import number


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-solver",
        help="train a learned solver (initializer + Anderson updates) for a saved model",
        description=(
            "Train eq.NeuralSolver for the frozen equilibrium model of a checkpoint (an image "
            "classifier or a language model), on the DEQ inputs of training images or text "
            "windows (no labels needed), and save it beside the checkpoint "
            f"as {SOLVER_FILENAME}; 'equilibria eval CHECKPOINT --solver neural' uses it."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="a run folder or checkpoint file")
    parser.add_argument("--epochs", type=number(int, 1), default=10, help="passes (default 10)")
    parser.add_argument("--unroll", type=number(int, 1), default=6, help="K unrolled steps")
    parser.add_argument(
        "--lr",
        type=number(float, 0, True, what="a learning rate"),
        default=3e-3,
        help="Adam learning rate",
    )
    parser.add_argument(
        "--init-epochs",
        type=number(int, 0),
        default=50,
        help="passes fitting the initializer alone first (cheap; default 50)",
    )
    parser.add_argument(
        "--init-width",
        type=number(int, 0),
        help="hidden channels of the initializer (0: linear; default 8 for images, 16 for a "
        "language model, whose initializer reads the embeddings through this layer only)",
    )
    parser.add_argument("--batches", type=number(int, 1), default=8, help="training batches")
    parser.add_argument(
        "--batch-size",
        type=number(int, 1),
        help="images (default 128) or text windows (default 16) per batch",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    parser.add_argument("--data-dir", help="folder with the data files")
    parser.add_argument(
        "--out", type=Path, help=f"solver file (default: beside the checkpoint, {SOLVER_FILENAME})"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    config = stored_config(path, checkpoint)
    if args.device:
        config = config.override([f"run.device={args.device}"])
    task = task_for(path, config.run.task, "solver_inputs", "train-solver")
    explicit = task.describe_model(config)
    if explicit:
        raise ConfigError(
            f"{path} holds {explicit}, which runs no solver; train-solver applies to "
            "equilibrium models only"
        )
    with distributed.session(config.run.device) as runtime:
        request = SolverRequest(
            path,
            checkpoint,
            config,
            runtime.device,
            batches=args.batches,
            batch_size=args.batch_size,
            data_dir=args.data_dir,
        )
        found = task.solver_inputs(request)
        model, inputs = found.model, found.inputs
        deq = find_deq(model)
        solver = NeuralSolver.for_model(
            inputs[0],
            deq.initial_state(inputs[0]),
            init_width=args.init_width if args.init_width is not None else found.init_width,
            init_skip=found.init_skip,
            learned_steps=args.unroll,
        )
        settings = SolverTraining(
            epochs=args.epochs, unroll=args.unroll, lr=args.lr, init_epochs=args.init_epochs
        )
        solver, log = fit_neural_solver(deq, inputs, solver.to(runtime.device), settings)
    out = args.out or path.parent / SOLVER_FILENAME
    solver.save(out)
    size, total = solver.num_parameters(), sum(p.numel() for p in model.parameters())
    print(
        f"trained a neural solver for {path}: {size} parameters ({100 * size / total:.2f}% of "
        f"the model's {total}); unrolled loss {log.loss[0]:.3f} -> {log.loss[-1]:.3f}, error "
        f"after {args.unroll} steps {log.final_step_error[-1]:.2e}; saved to {out}"
    )
    return 0
