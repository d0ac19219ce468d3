"""The `equilibria` command line: `train`, `eval`, `train-solver`, `sample` and `fit-image`.

User mistakes (a bad config key, missing data, an unusable checkpoint, a missing optional
package) end with one line on stderr and exit status 2; a training run stopped by Ctrl-C saves a
checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import EquilibriaError, NonFiniteError

# one line per command module; each offers `add_parser(commands)`
COMMAND_MODULES = (
    "train",
    "evaluate",
    "train_solver",
    "sample",
    "fit_image",
)

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equilibria",
        description="Train, evaluate and use deep equilibrium models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after options (train --out DIR epochs=5)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.run(args)
    except NonFiniteError as error:
        print(f"equilibria: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except EquilibriaError as error:
        print(f"equilibria: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("equilibria: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["build_parser", "main"]
