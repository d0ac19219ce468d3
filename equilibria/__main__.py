"""`python -m equilibria ...` (and `torchrun -m equilibria train ...`): the command line."""

from .cli import main

raise SystemExit(main())
