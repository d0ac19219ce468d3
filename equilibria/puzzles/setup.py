"""A puzzle run's data and network, from its config: the family, its sizes, the puzzles (generated
from the seed, cached), and the network with the DEQ settings of [deq]."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, ConfigError
from ..models.build import deq_options
from ..training.checkpoint import restore_model
from .data import FAMILIES, PuzzleFamily, PuzzleSet, load_puzzles
from .families import FamilySpec, family_spec
from .model import PuzzleModel, matched_block_width

# the generated sets' seeds: the training puzzles follow run.seed, the test puzzles never do (so
# that every run, whatever its seed, is tested on the same puzzles), and no two sets overlap
TEST_SEED = 1_000_003


@dataclass(frozen=True)
class Sizes:
    """The difficulties of a run: trained on `train`, tested on each of `test`."""

    train: int
    test: tuple[int, ...]


@dataclass
class PuzzleData:
    """The puzzles of a run: its family, the training set and one test set per size."""

    family: PuzzleFamily
    spec: FamilySpec
    sizes: Sizes
    train: PuzzleSet
    tests: dict[int, PuzzleSet]

    @property
    def description(self) -> str:
        tested = ", ".join(str(size) for size in self.sizes.test)
        return (
            f"{len(self.train):,} {self.family.description(self.sizes.train)} (tested at {tested})"
        )


def resolve(config: Config) -> Config:
    """`config` with the puzzle settings left at none set to the family's (sizes, width, steps
    per epoch) and deq.max_iter to its training cap, as the run's config.json records them."""
    p, spec = config.puzzles, family_spec(config.puzzles.family)
    sizes = run_sizes(config)
    puzzles = dataclasses.replace(
        p,
        train_size=sizes.train,
        test_sizes=sizes.test,
        width=width(config),
        steps_per_epoch=p.steps_per_epoch or spec.steps_per_epoch,
    )
    if p.network != "deq" and p.depth is None:
        puzzles = dataclasses.replace(puzzles, depth=training_cap(config))
    deq = dataclasses.replace(config.deq, max_iter=training_cap(config))
    data = dataclasses.replace(config.data, batch_size=config.data.batch_size or spec.batch_size)
    return config.replace(puzzles=puzzles, deq=deq, data=data)


def run_sizes(config: Config) -> Sizes:
    """The training and test difficulties (the family's where the config leaves them at none)."""
    p, spec = config.puzzles, family_spec(config.puzzles.family)
    return Sizes(p.train_size or spec.train_size, tuple(p.test_sizes or spec.test_sizes))


def training_cap(config: Config) -> int:
    """The deq's training cap: deq.max_iter, or the family's where it is none."""
    return config.deq.max_iter or family_spec(config.puzzles.family).train_cap


def width(config: Config) -> int:
    return config.puzzles.width or family_spec(config.puzzles.family).width


def puzzle_data(config: Config) -> PuzzleData:
    """The run's puzzles: `puzzles.train_puzzles` at the training size from run.seed, and
    `puzzles.test_puzzles` at each test size from a seed of their own."""
    p = config.puzzles
    sizes = run_sizes(config)
    family = FAMILIES[p.family]
    try:
        train = load_puzzles(p.family, p.train_puzzles, sizes.train, config.run.seed, p.cache_dir)
        tests = {
            size: load_puzzles(p.family, p.test_puzzles, size, TEST_SEED + size, p.cache_dir)
            for size in sizes.test
        }
    except ValueError as error:  # a size the family cannot generate
        raise ConfigError(f"puzzles.family={p.family}: {error}") from None
    return PuzzleData(family, family_spec(p.family), sizes, train, tests)


def solver_options(config: Config) -> dict[str, Any]:
    """The DEQ's keyword arguments for a puzzle run: [deq]'s, at the run's training cap, with
    test solves capped per puzzle by the evaluation (no eval cap of their own)."""
    deq = config.deq
    options = deq_options(config.replace(deq=deq.for_task("puzzles")))
    options.update(max_iter=training_cap(config), eval_max_iter=None, on_failure="ignore")
    options.pop("init", None)
    options.pop("init_weight", None)
    return options


def build_puzzle_model(config: Config, data: Any = None) -> PuzzleModel:
    """The network `puzzles.network` names, for the run's family."""
    p, spec = config.puzzles, family_spec(config.puzzles.family)
    size = width(config)
    depth = p.depth or training_cap(config)
    if p.network == "deq":
        return PuzzleModel(
            spec,
            size,
            "deq",
            deq_options=solver_options(config),
            start_scale=p.start_scale,
            path_noise=p.path_noise,
        )
    block = matched_block_width(spec, size, depth) if p.network == "feedforward" else None
    return PuzzleModel(spec, size, p.network, depth=depth, block_width=block)


def explicit_model(config: Config) -> str | None:
    """What the explicit networks are (None: the equilibrium model)."""
    p = config.puzzles
    if p.network == "deq":
        return None
    depth = p.depth or training_cap(config)
    if p.network == "tied":
        return f"a weight-tied network unrolled {depth} times"
    return f"a feed-forward network of {depth} blocks"


def trained_puzzle_model(config: Config, checkpoint: dict) -> nn.Module:
    """The trained network of a puzzle run's checkpoint, in eval mode on the CPU."""
    model = build_puzzle_model(config)
    restore_model(model, checkpoint["model"], "the puzzle checkpoint")
    return model.eval()


def family_of(config: Config, checkpoint: dict) -> PuzzleFamily:
    """What one's own puzzles are made with: the run's family (generate, read, check)."""
    return FAMILIES[config.puzzles.family]


def to_device(puzzles: PuzzleSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return puzzles.inputs.to(device), puzzles.targets.to(device)
