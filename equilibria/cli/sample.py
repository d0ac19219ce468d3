"""`equilibria sample CHECKPOINT`: write text with a trained character language model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Config, ConfigError
from ..data.text import Vocabulary
from ..lm import build_language_model, generate
from ..lm.model import context_length
from ..training import distributed
from ..training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, restore_model
from .arguments import number, stored_config


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sample",
        help="generate text with a trained language model (a run of --task lm)",
        description=(
            "Generate text one character at a time. A DEQ-Transformer keeps the equilibria "
            "of earlier positions as memory and starts each new solve from the previous "
            "position's equilibrium (--cold starts from zero instead)."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="a run folder or checkpoint file")
    parser.add_argument(
        "--prompt", help="text to continue (default: a newline, if the text has one)"
    )
    parser.add_argument("--chars", type=number(int, 1), default=400, help="characters to write")
    parser.add_argument(
        "--temperature",
        type=number(float, 0, what="a temperature"),
        default=0.8,
        help="0: always the likeliest",
    )
    parser.add_argument("--top-k", type=number(int, 1), help="draw among the k likeliest only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--cold", action="store_true", help="DEQ: solve each position from zero")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    parser.set_defaults(run=run)


def load_language_model(
    path: Path, device: str | None, checkpoint: dict | None = None
) -> tuple[Config, Vocabulary, object]:
    """The config, vocabulary and trained model of the language-model checkpoint at `path`
    (`checkpoint`: its contents, when the caller has already read them)."""
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
    config = stored_config(path, checkpoint)
    if config.run.task != "lm":
        raise ConfigError(
            f"{path} holds a run of task {config.run.task!r}; sample needs a language model "
            "(a run of 'equilibria train --task lm')"
        )
    chars = (checkpoint.get("data") or {}).get("vocab")
    if not isinstance(chars, str):
        raise CheckpointError(f"{path} holds no vocabulary, so its tokens cannot be read")
    if device:
        config = config.override([f"run.device={device}"])
    vocab = Vocabulary(chars)
    model = build_language_model(config, len(vocab))
    restore_model(model, checkpoint["model"], str(path))
    return config, vocab, model


def run(args: argparse.Namespace) -> int:
    path = find_checkpoint(args.checkpoint)
    config, vocab, model = load_language_model(path, args.device)
    prompt = args.prompt
    if prompt is None:
        prompt = "\n" if "\n" in vocab.chars else vocab.chars[0]
    if not prompt:
        raise ConfigError("--prompt must hold at least one character")
    runtime = distributed.start(config.run.device)
    model.to(runtime.device)
    result = generate(
        model,
        vocab,
        prompt,
        args.chars,
        context=context_length(config),
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        warm_start=not args.cold,
    )
    print(prompt + result.text)
    if result.mean_nfe is not None:
        start = "zero" if args.cold else "the previous position's equilibrium"
        print(
            f"[{args.chars} characters; mean forward NFE per character {result.mean_nfe:.1f}, "
            f"each solve started from {start}]",
            file=sys.stderr,
        )
    return 0
