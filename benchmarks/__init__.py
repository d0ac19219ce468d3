"""Reproducible performance measurements of equilibria: `python -m benchmarks [PART ...]`.

Every benchmark is a part: one module under `benchmarks.parts` that holds its own measurement
code and registers itself with `benchmarks.registry.register`; `python -m benchmarks --list`
shows them. The modules beside `parts` support them and measure nothing of their own:

- config, registry, runner, report, docs, plots: settings, the parts, one run, its output;
- timing, meters, residuals: clocks, memory meters, residual curves indexed by NFE;
- problems, bare, peer: the cells solved, their bare cell work, TorchDEQ set up alike;
- datasets, train_runs, frozen: the shared data, `equilibria train` in its own process, and a
  trained model frozen with its DEQ inputs;
- solver_sets: the solver lists the parts compare, derived from `eq.SOLVERS`;
- environment: the machine a report was measured on.
"""
