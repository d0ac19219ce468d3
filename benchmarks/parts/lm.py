"""Character language models on Tiny Shakespeare: the DEQ-Transformer against explicit stacks.

At (about) equal parameter count and equal training time (thread CPU seconds, one thread):
- validation bits per character, tokens per second and forward / backward NFE of each model;
- the DEQ with and without Jacobian regularization (NFE at test time);
- the activation memory a training step saves for backward, against depth: the explicit
  stack grows with L, the DEQ stays flat however many iterations it runs.

The text is ../shared/data/tinyshakespeare.txt.gz when present (else Python's bundled pydoc
topics, stated in the report); its last 10% is the validation split.

    python -m benchmarks lm                          # in the suite
    python -m benchmarks.parts.lm --budget S --out DIR  # with another training budget
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import equilibria as eq
from equilibria.data.text import TextData
from equilibria.lm.engine import evaluate, train_step
from equilibria.models import DEQTransformer, ExplicitTransformer

from .. import datasets
from ..config import BenchConfig
from ..meters import SavedTensorBytes
from ..plots import line_plot
from ..registry import Part, register
from ..report import Check, Column, Figure, Section, Table
from ..runner import command_line, run

LOSS_TARGET = 0.03  # the DEQ's validation loss within 3% of the explicit model's
MEMORY_TARGET = 4.0  # at least 4x less training activation memory at L = 8
TITLE = "Character language model: DEQ-Transformer against an explicit Transformer"


@dataclass(frozen=True)
class Settings:
    seq_len: int = 256
    batch: int = 8
    heads: int = 8
    explicit_width: int = 64
    layers: int = 8
    deq_width: int = 176  # about the explicit stack's parameter count (see the table)
    expansion: int = 4
    budget_s: float = 150.0  # thread CPU seconds of training steps per model
    lr: float = 2e-3
    warmup_steps: int = 20
    max_iter: int = 6
    eval_max_iter: int = 20
    jacobian_gamma: float = 2.0
    eval_chars: int = 16384
    depths: tuple[int, ...] = (1, 2, 4, 8)
    iterations: tuple[int, ...] = (2, 4, 8, 16)

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        if config.quick:
            return cls(
                seq_len=32,
                batch=8,
                heads=2,
                explicit_width=16,
                layers=4,
                deq_width=32,
                budget_s=3.0,
                eval_chars=1024,
                max_iter=4,
                eval_max_iter=6,
                depths=(1, 2, 4),
                iterations=(2, 4),
            )
        return cls()


def models(s: Settings, vocab: int) -> dict[str, nn.Module]:
    """The compared models, built from one seed each."""
    common = dict(expansion=s.expansion, weight_norm=True)
    solve = dict(
        max_iter=s.max_iter,
        eval_max_iter=s.eval_max_iter,
        tol=1e-3,
        backward=eq.Implicit(max_iter=s.max_iter),
    )
    builders = {
        f"explicit L={s.layers}": lambda: ExplicitTransformer(
            vocab, s.explicit_width, s.heads, layers=s.layers, **common
        ),
        "DEQ": lambda: DEQTransformer(vocab, s.deq_width, s.heads, **common, **solve),
        "DEQ + Jacobian reg.": lambda: DEQTransformer(
            vocab,
            s.deq_width,
            s.heads,
            jacobian_penalty=eq.JacobianPenalty(gamma=s.jacobian_gamma),
            **common,
            **solve,
        ),
    }
    built = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        built[name] = build()
    return built


def train_for(model: nn.Module, data: TextData, s: Settings, seed: int) -> dict[str, Any]:
    """Train for `s.budget_s` thread CPU seconds (a cosine learning rate over the budget);
    returns the training statistics and the validation metrics."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    clock = {"used": 0.0, "step": 0}

    def factor(_: int) -> float:
        warm = min((clock["step"] + 1) / s.warmup_steps, 1.0)
        return warm * 0.5 * (1 + math.cos(math.pi * min(clock["used"] / s.budget_s, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    losses, curve, nfe = [], [], []
    while clock["used"] < s.budget_s:
        starts = data.random_starts(s.batch, s.seq_len, generator)
        inputs, targets = data.windows(data.train, starts, s.seq_len)
        started = time.thread_time()
        sums = train_step(model, inputs, targets, optimizer, scheduler, grad_clip=1.0)
        clock["used"] += time.thread_time() - started
        clock["step"] += 1
        losses.append(sums["loss"] / sums["samples"])
        if "forward_nfe" in sums:
            nfe.append((sums["forward_nfe"], sums["backward_nfe"]))
        if clock["step"] % 10 == 0:
            curve.append((clock["used"], sum(losses[-10:]) / 10 / math.log(2)))
    val = evaluate(
        model,
        data,
        seq_len=s.seq_len,
        memory=0,
        characters=s.eval_chars,
        batch_size=64,
        device=torch.device("cpu"),
    )
    steps = clock["step"]
    return {
        "steps": steps,
        "cpu_s": clock["used"],
        "tokens_per_s": steps * s.batch * s.seq_len / clock["used"],
        "train_bpc": sum(losses[-20:]) / len(losses[-20:]) / math.log(2),
        "val_bpc": val["bpc"],
        "val_loss": val["loss"],
        "val_nfe": val["forward_nfe"],
        "train_nfe": sum(f for f, _ in nfe) / len(nfe) if nfe else None,
        "backward_nfe": sum(b for _, b in nfe) / len(nfe) if nfe else None,
        "curve": curve,
    }


def saved_mb(model: nn.Module, s: Settings, vocab: int) -> float:
    """MB that one training forward saves for backward (parameters excluded)."""
    model.train()
    tokens = torch.randint(vocab, (s.batch, s.seq_len), generator=torch.Generator().manual_seed(0))
    with SavedTensorBytes(exclude=model.parameters()) as saved:
        model(tokens)
    return saved.bytes / 2**20


def memory_scan(s: Settings, vocab: int) -> list[dict[str, Any]]:
    """Saved-for-backward MB of the explicit stack at each depth and of the DEQ (at the
    parameter-matched width) at each iteration count."""
    rows = []
    for depth in s.depths:
        model = ExplicitTransformer(
            vocab, s.explicit_width, s.heads, layers=depth, expansion=s.expansion
        )
        rows.append({"model": "explicit", "depth": depth, "saved_mb": saved_mb(model, s, vocab)})
    for iterations in s.iterations:
        model = DEQTransformer(
            vocab,
            s.deq_width,
            s.heads,
            expansion=s.expansion,
            tol=0.0,
            max_iter=iterations,
            patience=None,
        )
        rows.append({"model": "DEQ", "depth": iterations, "saved_mb": saved_mb(model, s, vocab)})
    return rows


RESULT_COLUMNS = [
    Column("model", "model"),
    Column("parameters", "parameters", ","),
    Column("steps", "steps"),
    Column("cpu_s", "CPU s", ".0f"),
    Column("tokens_per_s", "tokens/s", ".0f"),
    Column("train_bpc", "train bpc", ".3f"),
    Column("val_loss", "val loss (nats)", ".4f"),
    Column("val_bpc", "val bpc", ".3f"),
    Column("train_nfe", "train NFE fwd", ".1f"),
    Column("backward_nfe", "train NFE bwd", ".1f"),
    Column("val_nfe", "val NFE", ".1f"),
    Column("saved_mb", "saved for backward MB", ".1f"),
]
MEMORY_COLUMNS = [
    Column("model", "model"),
    Column("depth", "layers L / solver iterations"),
    Column("saved_mb", "saved for backward MB", ".1f"),
]


@register(
    "lm",
    TITLE,
    order=230,
    requires=("matplotlib",),
)
def lm_benchmark(config: BenchConfig, settings: Settings | None = None) -> Section:
    """The part: each model trained for the same budget, then scored; the memory scan."""
    s = settings or Settings.for_config(config)
    torch.set_num_threads(config.threads)
    data, source = datasets.corpus()
    vocab = len(data.vocab)
    section = Section(
        name="lm",
        title=TITLE,
        summary=(
            f"Each model trains for the same {s.budget_s:g} s of thread CPU time (one thread, "
            f"Adam at {s.lr:g} with a cosine schedule over the budget, batches of {s.batch} "
            f"windows of {s.seq_len} characters) on {source}, then is scored on the first "
            f"{s.eval_chars} validation characters. The explicit model stacks {s.layers} "
            f"different blocks of width {s.explicit_width}; the DEQ solves one block of width "
            f"{s.deq_width} (about the same parameter count) with Anderson, {s.max_iter} "
            f"iterations in training and up to {s.eval_max_iter} at test time, implicit "
            "gradients. 'Saved for backward' counts the activations one training forward "
            "stores (parameters excluded)."
        ),
        settings={
            "text": data.description,
            "heads": s.heads,
            "feed-forward expansion": s.expansion,
            "Jacobian gamma": s.jacobian_gamma,
            "budget (thread CPU s per model)": s.budget_s,
        },
    )
    results = Table("Equal training time", RESULT_COLUMNS)
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, model in models(s, vocab).items():
        memory = saved_mb(model, s, vocab)
        row = train_for(model, data, s, config.seed)
        curves[name] = ([t for t, _ in row["curve"]], [b for _, b in row["curve"]])
        del row["curve"]
        parameters = sum(p.numel() for p in model.parameters())
        results.add(model=name, parameters=parameters, saved_mb=memory, **row)
    scan = Table("Activation memory of one training step against depth", MEMORY_COLUMNS)
    for row in memory_scan(s, vocab):
        scan.add(**row)
    section.tables += [results, scan]
    section.checks += checks(results, scan, s)
    path = line_plot(
        config.out / "lm.png",
        [
            ("Training loss against CPU time", "train bpc (mean of 10 steps)", curves),
            (
                "Saved for backward",
                "MB",
                {
                    "explicit (x: layers)": _line(scan, "explicit"),
                    "DEQ (x: solver iterations)": _line(scan, "DEQ"),
                },
            ),
        ],
        xlabel="thread CPU seconds (left) / depth (right)",
    )
    section.figures.append(Figure(path.name, "Tiny Shakespeare: training curves and memory"))
    return section


def _line(table: Table, model: str) -> tuple[list[float], list[float]]:
    rows = [r for r in table.rows if r["model"] == model]
    return [r["depth"] for r in rows], [r["saved_mb"] for r in rows]


def checks(results: Table, scan: Table, s: Settings) -> list[Check]:
    """The targets: loss within 3% and at least 4x less memory at L; the DEQ flat in depth."""
    explicit, deq = results.rows[0], results.rows[1]
    gap = deq["val_loss"] / explicit["val_loss"] - 1
    ratio = explicit["saved_mb"] / deq["saved_mb"]
    flat = [r["saved_mb"] for r in scan.rows if r["model"] == "DEQ"]
    grows = [r["saved_mb"] for r in scan.rows if r["model"] == "explicit"]
    regularized = results.rows[2]
    return [
        Check(
            f"DEQ validation loss within {LOSS_TARGET:.0%} of the explicit L={s.layers} model's",
            f"{gap:+.1%} ({deq['val_bpc']:.3f} vs {explicit['val_bpc']:.3f} bpc)",
            gap <= LOSS_TARGET,
        ),
        Check(
            f"at least {MEMORY_TARGET:g}x less training activation memory at L={s.layers}",
            f"{ratio:.2f}x ({deq['saved_mb']:.1f} vs {explicit['saved_mb']:.1f} MB)",
            ratio >= MEMORY_TARGET,
        ),
        Check(
            "DEQ activation memory does not grow with solver iterations",
            f"{min(flat):.1f}-{max(flat):.1f} MB over {', '.join(map(str, s.iterations))}",
            max(flat) == min(flat),
        ),
        Check(
            "explicit activation memory grows with depth",
            f"{grows[0]:.1f} MB at L={s.depths[0]} -> {grows[-1]:.1f} MB at L={s.depths[-1]}",
            all(a < b for a, b in zip(grows, grows[1:], strict=False)),
        ),
        Check(
            "Jacobian regularization lowers the test-time NFE",
            f"{regularized['val_nfe']:.1f} vs {deq['val_nfe']:.1f}",
            regularized["val_nfe"] < deq["val_nfe"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.parts.lm [--budget S] [--out DIR]`: the part with another budget."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parts.lm", description=__doc__)
    parser.add_argument("--budget", type=float, default=Settings.budget_s, help="CPU s per model")
    parser.add_argument("--out", type=Path, default=Path("results/lm"), help="report folder")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(Settings(), budget_s=args.budget)
    part = Part("lm", TITLE, lambda config: lm_benchmark(config, settings))
    config = BenchConfig(out=args.out)
    run([part], config, command_line("python -m benchmarks.parts.lm", argv))
    print(f"report written to {config.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
