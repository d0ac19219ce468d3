"""Contrastive pre-training: a DEQ backbone against an explicit one with the same parameters.

Both backbones (the MDEQ trunk; the explicit ResNet trunk whose blocks and width give the
closest parameter count) are trained with the NT-Xent loss on two views of the digits images,
with the same batches, views, optimizer and projection head, for the same budget of thread CPU
seconds on one thread (the explicit backbone also for the DEQ's number of steps). Each is judged
by a linear probe on its frozen features, against the same probe on the randomly initialised
backbone (the floor) and on raw pixels. The part also measures whether starting the second
view's solve from the first view's fixed point saves evaluations, and the activation memory of
a training step per sample, from which it derives the largest batch that fits 8 GB.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from equilibria.config import Config
from equilibria.data import ImageData, load_digits
from equilibria.ssl import (
    ContrastiveModel,
    ViewAugment,
    build_contrastive_model,
    contrastive_step,
    fit_linear_probe,
    nt_xent,
    probe_backbone,
)
from equilibria.ssl.backbone import count_parameters
from equilibria.training.sampling import train_batches

from ..config import BenchConfig
from ..environment import load_average
from ..meters import SavedTensorBytes
from ..plots import line_plot
from ..registry import register
from ..report import Check, Column, Figure, Section, Table

GIB = 1024**3
MEMORY_LIMIT = 8 * GIB
DEQ_OVERRIDES = ("model.arch=mdeq",)
# the same cell applied 8 times with ordinary backpropagation (the DEQ's pretraining mode, kept on)
UNROLLED = ("deq.pretrain_depth=8", "deq.pretrain_steps=1000000000")


@dataclass(frozen=True)
class Settings:
    budget_s: float  # thread CPU seconds of training per backbone
    batch_size: int
    memory_batches: tuple[int, ...]
    reuse_batch: int
    lr: float = 1e-3
    seed: int = 0
    reuse_tol: float = 1e-3
    reuse_cap: int = 50
    train_samples: int | None = None  # the first N training images only (None: all)
    model: tuple[str, ...] = ()  # overrides of the DEQ's [model] keys (tests use small ones)

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        if config.quick:
            return cls(budget_s=12.0, batch_size=64, memory_batches=(8, 16), reuse_batch=64)
        return cls(budget_s=150.0, batch_size=256, memory_batches=(32, 64, 128), reuse_batch=256)


def base_config(s: Settings, *overrides: str) -> Config:
    return Config().override(
        [f"optim.lr={s.lr}", f"data.batch_size={s.batch_size}", f"run.seed={s.seed}", *overrides]
    )


def matched_explicit(
    deq_parameters: int, model: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], int]:
    """The explicit backbone (blocks per stage, block expansion) closest in parameters, with the
    DEQ's other [model] settings (`model`)."""
    best = None
    for blocks in (1, 2, 3):
        for expansion in (1, 2, 3, 4, 5, 6):
            overrides = (
                *model,
                "model.arch=resnet",
                f"resnet_blocks={blocks}",
                f"expansion={expansion}",
            )
            candidate = build_contrastive_model(Config().override(list(overrides)), 1)
            count = count_parameters(candidate.backbone)
            if best is None or abs(count - deq_parameters) < abs(best[1] - deq_parameters):
                best = (overrides, count)
    return best


def fill_value(data: ImageData) -> torch.Tensor:
    return torch.tensor([(0.0 - m) / s for m, s in zip(data.mean, data.std, strict=True)])


def train_for(
    model: ContrastiveModel,
    config: Config,
    data: ImageData,
    *,
    budget_s: float | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Contrastive steps until `budget_s` thread CPU seconds or `steps` steps are spent (Adam,
    constant learning rate); the loss curve and the solves' statistics."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    augment, fill = ViewAugment.from_config(config.ssl), fill_value(data)
    seed, batch = config.run.seed, config.data.batch_size
    spent, step, epoch = 0.0, 0, 0
    curve: list[tuple[float, float]] = []
    first_res, second_res, nfe = [], [], []
    while True:
        for indices in train_batches(len(data.train), batch, seed, epoch):
            if (steps is not None and step >= steps) or (
                budget_s is not None and spent >= budget_s
            ):
                return {
                    "steps": step,
                    "seconds": spent,
                    "curve": curve,
                    "first_residual": statistics.mean(first_res) if first_res else None,
                    "second_residual": statistics.mean(second_res) if second_res else None,
                    "forward_nfe": statistics.mean(nfe) if nfe else None,
                }
            generator = torch.Generator().manual_seed(seed * 100_003 + step)
            torch.manual_seed(seed * 100_003 + step)
            started = time.thread_time()
            sums, second = contrastive_step(
                model,
                data.inputs(data.train.images[indices]),
                augment,
                generator,
                optimizer,
                temperature=config.ssl.temperature,
                fill=fill,
                grad_clip=config.optim.grad_clip,
            )
            spent += time.thread_time() - started
            step += 1
            curve.append((spent, sums["loss"] / sums["samples"]))
            if second:
                first_res.append(sums["residual"])
                second_res.append(second["residual"])
                nfe.append(sums["forward_nfe"])
        epoch += 1


def probe(model: ContrastiveModel, config: Config, data: ImageData) -> float:
    s = config.ssl
    result = probe_backbone(
        model.backbone, data, torch.device("cpu"), l2=s.probe_l2, iters=s.probe_iters
    )
    return result["test_accuracy"]


def pixel_probe(data: ImageData, config: Config) -> float:
    x = data.inputs(data.train.images).flatten(1)
    fitted = fit_linear_probe(
        x, data.train.labels, data.classes, l2=config.ssl.probe_l2, iters=config.ssl.probe_iters
    )
    return fitted.accuracy(data.inputs(data.test.images).flatten(1), data.test.labels)


@torch.no_grad()
def reuse_savings(model: ContrastiveModel, data: ImageData, s: Settings) -> list[dict]:
    """NFE and residual of the second view's solve from zeros, from the first view's fixed point
    and from another image's fixed point (a control), on the trained DEQ in eval mode."""
    backbone = model.backbone.eval()
    augment, fill = ViewAugment(), fill_value(data)
    x = data.inputs(data.train.images[: s.reuse_batch])
    first = augment(x, torch.Generator().manual_seed(1), fill)
    second = augment(x, torch.Generator().manual_seed(2), fill)
    z1 = backbone.equilibrium(first, tol=s.reuse_tol, max_iter=s.reuse_cap)
    starts = {
        "zeros (cold)": None,
        "the first view's fixed point": z1,
        "another image's fixed point (control)": tuple(z.roll(1, 0) for z in z1),
    }
    rows = []
    for name, z0 in starts.items():
        backbone.equilibrium(second, z0, tol=s.reuse_tol, max_iter=s.reuse_cap)
        to_tol = backbone.stats
        backbone.equilibrium(second, z0, tol=0.0, max_iter=8)
        at_cap = backbone.stats
        rows.append(
            {
                "start": name,
                "nfe": to_tol.forward_nfe,
                "converged": float(to_tol.converged.float().mean()),
                "residual_8": float(at_cap.forward.residual.float().mean()),
            }
        )
    return rows


def activation_bytes(model: ContrastiveModel, data: ImageData, batch: int) -> int:
    """Bytes saved for backward by one training step (both views, loss) at `batch` images."""
    model.train()
    x = data.inputs(data.train.images[:batch])
    augment, fill = ViewAugment(), fill_value(data)
    first = augment(x, torch.Generator().manual_seed(0), fill)
    second = augment(x, torch.Generator().manual_seed(1), fill)
    with SavedTensorBytes(exclude=model.parameters()) as saved:
        pair = model(first, second)
        loss = nt_xent(pair.first, pair.second)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return saved.bytes


def memory_row(name: str, model: ContrastiveModel, data: ImageData, s: Settings) -> dict:
    sizes = list(s.memory_batches)
    measured = [activation_bytes(model, data, b) for b in sizes]
    slope = (measured[-1] - measured[0]) / (sizes[-1] - sizes[0])
    fixed = measured[0] - slope * sizes[0]
    # weights, gradients and Adam's two moments stay in memory whatever the batch
    state = 4 * 4 * count_parameters(model)
    largest = int((MEMORY_LIMIT - state - max(fixed, 0.0)) // slope)
    return {
        "backbone": name,
        **{f"mb_{b}": m / 2**20 for b, m in zip(sizes, measured, strict=True)},
        "per_sample_kb": slope / 1024,
        "largest_batch": largest,
    }


def run(config: BenchConfig, settings: Settings | None = None) -> Section:
    s = settings or Settings.for_config(config)
    torch.set_num_threads(config.threads)
    data = load_digits().with_train_samples(s.train_samples)
    deq_config = base_config(s, *s.model, *DEQ_OVERRIDES)
    torch.manual_seed(s.seed)
    deq_parameters = count_parameters(build_contrastive_model(deq_config, 1).backbone)
    explicit_overrides, _ = matched_explicit(deq_parameters, s.model)
    explicit_config = base_config(s, *explicit_overrides)

    def fresh(cfg: Config) -> ContrastiveModel:
        torch.manual_seed(s.seed)
        return build_contrastive_model(cfg, data.shape[0])

    rows, curves, trained = [], {}, {}
    runs = [
        ("DEQ (MDEQ trunk)", deq_config, {"budget_s": s.budget_s}),
        ("explicit, same steps", explicit_config, None),
        ("explicit, same CPU time", explicit_config, {"budget_s": s.budget_s}),
    ]
    deq_steps = None
    for name, cfg, budget in runs:
        model = fresh(cfg)
        floor = probe(model, cfg, data)
        result = train_for(model, cfg, data, **(budget or {"steps": deq_steps}))
        if deq_steps is None:
            deq_steps = result["steps"]
        trained[name] = model
        curves[name] = ([t for t, _ in result["curve"]], [v for _, v in result["curve"]])
        rows.append(
            {
                "backbone": name,
                "parameters": count_parameters(model.backbone),
                "steps": result["steps"],
                "cpu_s": result["seconds"],
                "loss": statistics.mean(v for _, v in result["curve"][-5:]),
                "floor": 100 * floor,
                "probe": 100 * probe(model, cfg, data),
                "nfe": result["forward_nfe"],
                "res1": result["first_residual"],
                "res2": result["second_residual"],
            }
        )
    pixels = 100 * pixel_probe(data, deq_config)

    section = Section(
        name="ssl",
        title="Contrastive pre-training: DEQ against explicit backbone at equal parameters",
        summary=__doc__.split("\n\n")[1].replace("\n", " "),
        settings={
            "data": f"{data.name} ({len(data.train)} train / {len(data.test)} test)",
            "batch": str(s.batch_size),
            "optimizer": f"Adam, constant lr {s.lr:g}, grad clip 1",
            "budget": f"{s.budget_s:g} thread CPU s per backbone, 1 thread",
            "DEQ": "channels 24,24, expansion 4, Anderson tol 1e-3, 8 iterations, implicit "
            "backward (8), view 2 from view 1's fixed point",
            "explicit": ", ".join(explicit_overrides[len(s.model) + 1 :]),
            "views": "rotate 15 deg, zoom 0.2, translate 0.15, contrast 0.4, erase 0.5, noise 0.1",
            "probe": "logistic regression (L2 1e-3, L-BFGS 200) on pooled features (48)",
            "load average before": load_average(),
        },
    )
    table = Table(
        "Linear-probe test accuracy (digits)",
        [
            Column("backbone", "backbone"),
            Column("parameters", "backbone parameters"),
            Column("steps", "steps"),
            Column("cpu_s", "train CPU s", ".1f"),
            Column("loss", "final NT-Xent", ".3f"),
            Column("floor", "probe at random init %", ".2f"),
            Column("probe", "probe after training %", ".2f"),
            Column("nfe", "train NFE per view", ".1f"),
            Column("res1", "train residual view 1", ".2e"),
            Column("res2", "train residual view 2 (reused)", ".2e"),
        ],
    )
    for row in rows:
        table.add(**row)
    section.tables.append(table)
    section.notes.append(f"The same probe on the raw pixels: {pixels:.2f}%.")

    reuse = Table(
        "Fixed-point reuse across views: the trained DEQ's second-view solve (eval mode, "
        f"{s.reuse_batch} images, Anderson, rel tol {s.reuse_tol:g}, cap {s.reuse_cap})",
        [
            Column("start", "second view solved from"),
            Column("nfe", "NFE to tolerance"),
            Column("converged", "converged", ".1%"),
            Column("residual_8", "residual after 8 NFE", ".2e"),
        ],
    )
    for row in reuse_savings(trained["DEQ (MDEQ trunk)"], data, s):
        reuse.add(**row)
    section.tables.append(reuse)

    memory = Table(
        "Activation memory of one training step (two views), saved for backward",
        [
            Column("backbone", "backbone"),
            *(Column(f"mb_{b}", f"MB at batch {b}", ".2f") for b in s.memory_batches),
            Column("per_sample_kb", "KB per image", ".1f"),
            Column("largest_batch", "largest batch in 8 GB (derived)"),
        ],
    )
    for name in ("DEQ (MDEQ trunk)", "explicit, same steps"):
        memory.add(**memory_row(name, trained[name], data, s))
    unrolled = fresh(base_config(s, *s.model, *DEQ_OVERRIDES, *UNROLLED))
    memory.add(**memory_row("the DEQ cell unrolled 8 times (backpropagated)", unrolled, data, s))
    section.tables.append(memory)
    section.notes.append(
        "No GPU here: memory is the bytes autograd saves for backward in one training step on "
        "the CPU (each storage once, parameters excluded), measured at the batch sizes shown; "
        "the per-image slope, plus weights, gradients and Adam state, gives the largest batch "
        "whose activations fit 8 GB. It leaves out the solver's own temporaries and allocator "
        "overhead, so a real 8 GB device fits somewhat less."
    )
    plot = line_plot(
        config.out / "ssl_loss.png",
        [("NT-Xent loss during training", "loss", curves)],
        xlabel="thread CPU seconds",
    )
    section.figures.append(Figure(plot.name, "NT-Xent loss against training CPU time"))
    section.checks.extend(checks(rows, deq_parameters))
    return section


def checks(rows: list[dict], deq_parameters: int) -> list[Check]:
    result = []
    for row in rows:
        result.append(
            Check(
                f"{row['backbone']}: the probe beats the random-init backbone",
                f"{row['probe']:.2f}% vs {row['floor']:.2f}%",
                row["probe"] > row["floor"],
            )
        )
    explicit = rows[1]["parameters"]
    result.append(
        Check(
            "equal parameters (within 3%)",
            f"DEQ {deq_parameters:,}, explicit {explicit:,}",
            abs(explicit - deq_parameters) <= 0.03 * deq_parameters,
        )
    )
    return result


register(
    "ssl",
    "Contrastive pre-training: DEQ vs explicit backbone",
    order=230,
    requires=("sklearn", "matplotlib"),
)(run)
