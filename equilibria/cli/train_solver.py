"""`equilibria train-solver CHECKPOINT`: train a learned solver for a saved equilibrium model.

The model is frozen; the solver learns from the DEQ inputs of training images (no labels) and is
saved beside the checkpoint as `neural_solver.pt`, where `equilibria eval --solver neural`
finds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..config import ConfigError
from ..data import load_data
from ..deq import DEQ
from ..extras import require
from ..models import build_model
from ..neural import NeuralSolver, SolverTraining, fit_neural_solver
from ..training import distributed
from ..training.checkpoint import find_checkpoint, load_checkpoint, restore_model
from .arguments import number
from .evaluate import _stored_config

SOLVER_FILENAME = "neural_solver.pt"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-solver",
        help="train a learned solver (initializer + Anderson updates) for a saved model",
        description=(
            "Train eq.NeuralSolver for the frozen equilibrium model of a checkpoint, on the DEQ "
            "inputs of training images (no labels needed), and save it beside the checkpoint "
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
        default=8,
        help="hidden channels of the initializer (0: linear; default 8)",
    )
    parser.add_argument("--batches", type=number(int, 1), default=8, help="training batches")
    parser.add_argument("--batch-size", type=number(int, 1), default=128)
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    parser.add_argument("--data-dir", help="folder with the data files")
    parser.add_argument(
        "--out", type=Path, help=f"solver file (default: beside the checkpoint, {SOLVER_FILENAME})"
    )
    parser.set_defaults(run=run)


def find_deq(model: torch.nn.Module) -> DEQ:
    """The model's (first) DEQ layer."""
    for module in model.modules():
        if isinstance(module, DEQ):
            return module
    raise ConfigError("the model holds no DEQ layer, so there is no solver to learn")


def deq_inputs(model: torch.nn.Module, deq: DEQ, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inputs x that `deq` receives when `model` runs on each batch of images."""
    seen: list[torch.Tensor] = []
    handle = deq.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for batch in images:
                model(batch, max_iter=1, on_failure="ignore")
    finally:
        handle.remove()
    return seen


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    config = _stored_config(path, checkpoint, args)
    if config.model.arch != "mdeq":
        raise ConfigError(
            f"{path} holds an explicit {config.model.arch}, which runs no solver; train-solver "
            "applies to equilibrium models only"
        )
    if config.data.dataset == "digits":
        require("sklearn", "the digits data set")
    runtime = distributed.start(config.run.device)
    try:
        data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
        model = build_model(config, data.shape, data.classes)
        restore_model(model, checkpoint.get("average") or checkpoint["model"], str(path))
        model.to(runtime.device).eval()
        deq = find_deq(model)
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        chosen = order[: args.batches * args.batch_size].split(args.batch_size)
        images = [data.inputs(data.train.images[idx], runtime.device) for idx in chosen]
        inputs = deq_inputs(model, deq, images)
        solver = NeuralSolver.for_model(
            inputs[0],
            deq.initial_state(inputs[0]),
            init_width=args.init_width,
            learned_steps=args.unroll,
        )
        settings = SolverTraining(
            epochs=args.epochs, unroll=args.unroll, lr=args.lr, init_epochs=args.init_epochs
        )
        solver, log = fit_neural_solver(deq, inputs, solver.to(runtime.device), settings)
    finally:
        distributed.stop(runtime)
    out = args.out or path.parent / SOLVER_FILENAME
    solver.save(out)
    size, total = solver.num_parameters(), sum(p.numel() for p in model.parameters())
    print(
        f"trained a neural solver for {path}: {size} parameters ({100 * size / total:.2f}% of "
        f"the model's {total}); unrolled loss {log.loss[0]:.3f} -> {log.loss[-1]:.3f}, error "
        f"after {args.unroll} steps {log.final_step_error[-1]:.2e}; saved to {out}"
    )
    return 0
