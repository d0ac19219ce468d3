"""Pictures of answers: puzzles drawn in a grid of panels, what a model got wrong in red."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...files import pyplot, write_figure
from .registry import get_family

WALL = (0.15, 0.15, 0.2)
OPEN = (1.0, 1.0, 1.0)
PATH = (0.35, 0.6, 0.95)
WRONG = (0.9, 0.15, 0.15)
WRONG_TINT = (1.0, 0.82, 0.82)
GIVEN = "black"
PREDICTED = (0.1, 0.3, 0.85)
BIT = (0.2, 0.2, 0.2)


def draw_puzzles(
    family: str,
    inputs: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor,
    path: str | Path,
    title: str | None = None,
    limit: int = 8,
) -> None:
    """Draw the first `limit` puzzles of `family` with their predicted answers to the PNG `path`,
    each panel titled "solved" or "wrong (k squares/cells/bits)"."""
    kind = get_family(family)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"draw_puzzles: predictions of shape {tuple(predictions.shape)} do not match "
            f"targets of shape {tuple(targets.shape)}"
        )
    count = min(limit, len(inputs))
    if count < 1:
        raise ValueError("draw_puzzles: no puzzles to draw")
    inputs, predictions, targets = (
        t[:count].detach().cpu().numpy() for t in (inputs, predictions, targets)
    )
    plt = pyplot("pictures of puzzles")
    if family == "prefix_sums":
        columns, width = 1, min(14.0, 1.5 + 0.1 * inputs.shape[1])
        height = 1.4
    else:
        columns, width, height = min(count, 4), 3.0, 3.3
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False
    )
    draw = {"prefix_sums": _draw_bits, "mazes": _draw_maze, "sudoku": _draw_sudoku}[family]
    for index, axis in enumerate(axes.flat):
        if index >= count:
            axis.axis("off")
            continue
        wrong = draw(axis, inputs[index], predictions[index], targets[index])
        plural = "" if wrong == 1 else "s"
        axis.set_title("solved" if wrong == 0 else f"wrong ({wrong} {kind.unit}{plural})")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    write_figure(figure, Path(path))


def _bare(axis) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def _draw_maze(axis, inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> int:
    """Walls dark, the predicted path blue, wrong squares red, S and G lettered."""
    is_open = inputs[0] > 0.5
    predicted, wanted = prediction == 1, target == 1
    wrong = predicted != wanted
    image = np.where(is_open[..., None], OPEN, WALL)
    image[predicted] = PATH
    image[wrong] = WRONG
    axis.imshow(image, interpolation="nearest")
    size = max(4.0, min(12.0, 160.0 / max(is_open.shape)))
    for channel, letter, color in ((1, "S", "darkgreen"), (2, "G", "darkviolet")):
        for row, column in zip(*np.nonzero(inputs[channel] > 0.5), strict=True):
            axis.text(
                column,
                row,
                letter,
                ha="center",
                va="center",
                color=color,
                fontsize=size,
                fontweight="bold",
            )
    _bare(axis)
    return int(wrong.sum())


def _draw_sudoku(axis, inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> int:
    """Givens black, predicted digits blue, wrong cells red on a red tint."""
    rectangle = pyplot().Rectangle
    wrong = prediction != target
    for cell in range(81):
        row, column = divmod(cell, 9)
        digit = int(prediction[cell])
        if wrong[cell]:
            axis.add_patch(rectangle((column, row), 1, 1, facecolor=WRONG_TINT))
            color = WRONG
        else:
            color = GIVEN if inputs[cell] else PREDICTED
        text = str(digit) if 1 <= digit <= 9 else "?"
        axis.text(column + 0.5, row + 0.5, text, ha="center", va="center", color=color, fontsize=9)
    for line in range(10):
        width = 1.6 if line % 3 == 0 else 0.4
        axis.plot([0, 9], [line, line], color="black", linewidth=width)
        axis.plot([line, line], [0, 9], color="black", linewidth=width)
    axis.set_xlim(0, 9)
    axis.set_ylim(9, 0)
    axis.set_aspect("equal")
    axis.axis("off")
    return int(wrong.sum())


def _draw_bits(axis, inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> int:
    """Three rows of squares: the input bits, the predicted parity, the wrong positions."""
    wrong = prediction != target
    image = np.ones((3, len(inputs), 3))
    image[0][inputs == 1] = BIT
    image[1][prediction == 1] = PREDICTED
    image[2][wrong] = WRONG
    axis.imshow(image, interpolation="nearest", aspect="auto")
    if len(inputs) <= 128:  # thin gaps show the single squares
        axis.vlines(np.arange(len(inputs) + 1) - 0.5, -0.5, 2.5, color="white", linewidth=0.5)
    axis.set_xticks([])
    axis.set_yticks(range(3), ["input", "predicted", "wrong"], fontsize=7)
    return int(wrong.sum())
