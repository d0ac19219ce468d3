"""`equilibria train-solver CHECKPOINT`: train a learned solver for a saved equilibrium model.

The model (an MDEQ classifier or a DEQ-Transformer language model) is frozen; the solver learns
from the DEQ inputs of training images or text windows (no labels) and is saved beside the
checkpoint as `neural_solver.pt`, where `equilibria eval --solver neural` finds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError
from ..config.schema import DEQ_MODELS
from ..data import load_data
from ..data.text import TextData
from ..deq import DEQ
from ..extras import require
from ..models import build_model
from ..neural import NeuralSolver, SolverTraining, fit_neural_solver
from ..training import distributed
from ..training.checkpoint import find_checkpoint, load_checkpoint, restore_model
from .arguments import number, stored_config
from .evaluate_lm import scored_text
from .sample import load_language_model

SOLVER_FILENAME = "neural_solver.pt"


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


def find_deq(model: torch.nn.Module) -> DEQ:
    """The model's (first) DEQ layer."""
    for module in model.modules():
        if isinstance(module, DEQ):
            return module
    raise ConfigError("the model holds no DEQ layer, so there is no solver to learn")


def deq_inputs(model: torch.nn.Module, deq: DEQ, batches: list[torch.Tensor]) -> list[Any]:
    """The inputs x that `deq` receives when `model` runs on each batch (images or tokens):
    tensors, or tuples of tensors for a DEQ-Transformer."""
    seen: list[Any] = []

    def detached(x: Any) -> Any:
        return tuple(detached(part) for part in x) if isinstance(x, tuple) else x.detach()

    handle = deq.register_forward_pre_hook(lambda module, args: seen.append(detached(args[0])))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch, max_iter=1, on_failure="ignore")
    finally:
        handle.remove()
    return seen


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    config = stored_config(path, checkpoint)
    if args.device:
        config = config.override([f"run.device={args.device}"])
    language = config.run.task == "lm"
    if config.run.task not in ("classify", "lm"):
        raise ConfigError(
            f"{path} holds a run of task {config.run.task!r}; train-solver applies to image "
            "classifiers (task 'classify') and language models (task 'lm')"
        )
    with distributed.session(config.run.device) as runtime:
        if language:
            model, inputs = _language_model_inputs(path, checkpoint, config, args, runtime.device)
        else:
            model, inputs = _classifier_inputs(path, checkpoint, config, args, runtime.device)
        deq = find_deq(model)
        width = args.init_width if args.init_width is not None else (16 if language else 8)
        solver = NeuralSolver.for_model(
            inputs[0],
            deq.initial_state(inputs[0]),
            init_width=width,
            init_skip=not language,  # embeddings are wide: read them through the hidden layer
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


def _classifier_inputs(
    path: Path, checkpoint: dict, config: Config, args: argparse.Namespace, device: torch.device
) -> tuple[torch.nn.Module, list[Any]]:
    """The frozen image model and the DEQ inputs of `args.batches` batches of training images."""
    if config.model.arch not in DEQ_MODELS:
        raise ConfigError(
            f"{path} holds an explicit {config.model.arch}, which runs no solver; train-solver "
            "applies to equilibrium models only"
        )
    if args.data_dir:
        config = config.override([f"data.data_dir={args.data_dir}"])
    if config.data.dataset == "digits":
        require("sklearn", "the digits data set")
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    model = build_model(config, data.shape, data.classes)
    restore_model(model, checkpoint.get("average") or checkpoint["model"], str(path))
    model.to(device).eval()
    batch_size = args.batch_size or 128
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    chosen = order[: args.batches * batch_size].split(batch_size)
    images = [data.inputs(data.train.images[idx], device) for idx in chosen]
    return model, deq_inputs(model, find_deq(model), images)


def _language_model_inputs(
    path: Path, checkpoint: dict, config: Config, args: argparse.Namespace, device: torch.device
) -> tuple[torch.nn.Module, list[Any]]:
    """The frozen DEQ-Transformer and the DEQ inputs of `args.batches` batches of training
    windows (`lm.seq_len` characters each, drawn with seed 0)."""
    if config.lm.network != "deq":
        raise ConfigError(
            f"{path} holds an {config.lm.network} transformer, which runs no solver; "
            "train-solver applies to equilibrium models only (lm.network=deq)"
        )
    _, vocab, model = load_language_model(path, None, checkpoint)
    data = scored_text(config, vocab, path)
    model.to(device).eval()
    windows = training_windows(data, args.batches, args.batch_size or 16, config.lm.seq_len)
    return model, deq_inputs(model, find_deq(model), [w.to(device) for w in windows])


def training_windows(
    data: TextData, batches: int, batch_size: int, length: int
) -> list[torch.Tensor]:
    """`batches` batches of `batch_size` training windows of `length` characters (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    return [
        data.windows(data.train, data.random_starts(batch_size, length, generator), length)[0]
        for _ in range(batches)
    ]
