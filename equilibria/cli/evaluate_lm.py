"""`equilibria eval` for a language model (a run of `equilibria train --task lm`): bits per
character and accuracy of next-character prediction on the run's text, at any solver setting or
over a sweep of iteration caps (with a plot of bits per character against NFE)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, ConfigError
from ..data.text import TextData, Vocabulary, load_text
from ..extras import require
from ..lm.engine import evaluate
from ..lm.model import context_length
from ..training import distributed
from ..training.checkpoint import CheckpointError
from ..training.plots import plot_metric_vs_nfe
from .eval_settings import check_solve_options, describe, neural_solver, solve_options, write_eval
from .sample import load_language_model

SPLITS = {"test": "val", "train": "train"}  # --split -> the split of the text
SPLIT_NAMES = {"val": "validation", "train": "train"}
PLOT = "bpc_vs_nfe.png"


def scored_text(config: Config, vocab: Vocabulary, path: Path) -> TextData:
    """The run's text (`lm.text`, split as in training), checked to have the vocabulary of the
    checkpoint at `path` and room for one training window."""
    lm = config.lm
    data = load_text(lm.text, lm.val_fraction)
    if data.vocab != vocab:
        raise CheckpointError(
            f"the text {data.name} (lm.text={lm.text}) now has another vocabulary "
            f"({len(data.vocab)} characters) than the model in {path} ({len(vocab)}): the text "
            "changed since training; evaluate with the text the model learned"
        )
    data.check_length(
        context_length(config), "lm.seq_len + lm.memory" if lm.memory else "lm.seq_len"
    )
    return data


def score(
    model: nn.Module,
    data: TextData,
    config: Config,
    device: torch.device,
    *,
    split: str,
    batch_size: int,
    solve: dict[str, Any],
    caps: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Next-character scores of the first `lm.eval_chars` of `split` ("val" or "train"), as the
    run's validation measures them: one row with the `solve` settings, or one per iteration cap
    in `caps` (ascending; `solve` gives the solver and tolerance)."""
    lm = config.lm
    common = dict(
        seq_len=lm.seq_len,
        memory=lm.memory,
        characters=lm.eval_chars,
        batch_size=batch_size,
        device=device,
        precision=config.run.precision,
        split=split,
    )
    if caps is None:
        return [evaluate(model, data, **common, solve=solve)]
    return [
        {"max_iter": cap, **evaluate(model, data, **common, solve={**solve, "max_iter": cap})}
        for cap in sorted(set(caps))
    ]


def row(label: str, result: Mapping[str, Any]) -> str:
    """One printed line: bits per character, accuracy and, for a DEQ, mean NFE and residual."""
    text = f"{label:<22} bits/char {result['bpc']:.4f}  accuracy {100 * result['accuracy']:6.2f}%"
    if result.get("forward_nfe") is not None:
        text += f"  mean NFE {result['forward_nfe']:5.1f}  residual {result['residual']:.2e}"
    return text


def plot_bpc_vs_nfe(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str = ""
) -> None:
    """Bits per character against the mean forward NFE spent, one line per labelled sweep."""
    plot_metric_vs_nfe(
        sweeps,
        path,
        key="bpc",
        ylabel="bits per character",
        xlabel="mean forward NFE per window",
        title=title or "bits per character vs inference compute",
    )


def run(args: argparse.Namespace, path: Path, checkpoint: dict) -> int:
    """`equilibria eval` (options `args`) of the language-model checkpoint at `path` (read as
    `checkpoint`)."""
    if args.data_dir:
        raise ConfigError(
            "--data-dir applies to image classifiers; a language model reads the text file of "
            "its config (lm.text)"
        )
    config, vocab, model = load_language_model(path, args.device, checkpoint)
    solving = solve_options(args)
    network = config.lm.network
    explicit = f"an explicit transformer (lm.network={network})" if network != "deq" else None
    check_solve_options(path, explicit, solving, args)
    if args.out and args.sweep:
        require("matplotlib", "the bits-per-character-vs-NFE plot")
    data = scored_text(config, vocab, path)
    split = SPLITS[args.split]
    with distributed.session(config.run.device) as runtime:
        if runtime.distributed:
            raise ConfigError("a language model evaluates in one process; launch without torchrun")
        model.to(runtime.device)
        if args.solver == "neural":
            solving["solver"] = neural_solver(path).to(runtime.device)
        rows = score(
            model,
            data,
            config,
            runtime.device,
            split=split,
            batch_size=args.batch_size or config.data.eval_batch_size,
            solve=solving,
            caps=args.sweep,
        )
    name = SPLIT_NAMES[split]
    print(
        f"{path} on {data.name} {name} text, {int(rows[0]['characters']):,} characters "
        f"({describe(solving)}):"
    )
    for result in rows:
        print(
            "  " + row(f"max_iter {result['max_iter']}" if "max_iter" in result else name, result)
        )
    if args.out:
        write_eval(args.out, path, solving, rows, split=name)
        if args.sweep:
            deq = config.deq
            tol = next(t for t in (args.tol, deq.eval_tol, deq.tol) if t is not None)
            solver = args.solver or deq.eval_solver or deq.solver
            plot_bpc_vs_nfe(
                {f"{solver}, tol {tol:g}": rows},
                args.out / PLOT,
                title=f"{data.name}: one model, any test-time budget",
            )
        print(f"wrote {args.out / 'eval.json'}")
    return 0
