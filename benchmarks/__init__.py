"""Reproducible performance measurements of equilibria: `python -m benchmarks [PART ...]`.

Each part lives in its own module under `benchmarks.parts` and registers itself with
`benchmarks.registry.register`; the command line runs the registered parts and writes one
markdown report with its plots (see `benchmarks.__main__`).
"""
