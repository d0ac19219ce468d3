"""The benchmark suite: each part at a tiny size, its numbers checked against independent counts."""

import ast
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import benchmarks
import equilibria as eq
from benchmarks import __main__ as cli
from benchmarks import peer, registry
from benchmarks.config import BenchConfig
from benchmarks.docs import README_END, README_START, render_docs, write_docs
from benchmarks.meters import SavedTensorBytes, peak_tensor_bytes
from benchmarks.parts import gradients, memory, overhead, solvers
from benchmarks.problems import CountingCell, conv, mdeq, slow_tanh
from benchmarks.report import Check, Column, Report, Section, Table, format_value
from benchmarks.solver_sets import classical_solvers, nonlinear_solvers
from benchmarks.timing import interleaved

TINY_TANH = dict(features=16, batch=4)


@pytest.fixture
def config(tmp_path):
    return BenchConfig(quick=True, out=tmp_path)


def tiny_tanh():
    return slow_tanh(**TINY_TANH)


# ---------------------------------------------------------------- registry and command line


def test_registry_lists_the_parts_in_report_order():
    assert list(registry.discover())[:4] == ["solvers", "memory", "overhead", "gradients"]


def test_unknown_part_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown benchmark part 'nope'.*solvers, memory"):
        registry.select(["solvers", "nope"])


def test_command_line_rejects_bad_input_in_one_line(capsys):
    assert cli.main(["nope"]) == 2
    assert "unknown benchmark part 'nope'" in capsys.readouterr().err
    assert cli.main(["--threads", "0"]) == 2
    assert "threads must be an integer >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["--device", "cuda"]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err


def test_a_part_that_needs_a_missing_module_is_skipped_with_a_note(config):
    def never_runs(config):
        raise AssertionError("a part with missing requirements must not run")

    registry.register("needs_model", "Needs a model", requires=("no_such_module_here",))(never_runs)
    try:
        report = cli.run(registry.select(["needs_model"]), config, "test")
    finally:
        del registry.PARTS["needs_model"]
    (section,) = report.sections
    assert "Skipped: needs no_such_module_here" in section.notes[0]
    assert "Skipped: needs no_such_module_here" in (config.out / "report.md").read_text()
    saved = json.loads((config.out / "report.json").read_text())
    assert saved["sections"][0]["name"] == "needs_model"
    assert saved["environment"]["CPU threads (torch)"] == "1"


def test_clock_is_thread_cpu_time_only_for_one_cpu_thread(tmp_path):
    assert BenchConfig(threads=1, out=tmp_path).clock_name == "cpu"
    assert BenchConfig(threads=2, out=tmp_path).clock_name == "wall"
    assert BenchConfig(threads=1, wall_clock=True, out=tmp_path).clock_name == "wall"


# ---------------------------------------------------------------- the suite's layout

PACKAGE = Path(benchmarks.__file__).parent
PARTS_PACKAGE = PACKAGE / "parts"


def benchmark_modules() -> dict[str, Path]:
    """Every module of the benchmarks package by dotted name (packages by their __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The benchmarks modules `name` imports anywhere in its file, lazy imports included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            if not node.level:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        # a package's own __init__ runs on the way to its modules; it imports nothing here
        found |= {t for t in targets if t in known and t not in ("benchmarks", name)}
    return found


def test_every_parts_module_registers_a_part_and_the_list_shows_each(capsys):
    parts = registry.discover()
    modules = {p.name for p in PARTS_PACKAGE.glob("*.py") if p.name != "__init__.py"}
    registering = {Path(sys.modules[p.run.__module__].__file__).name for p in parts.values()}
    assert modules <= registering  # a file under parts/ holds at least one registered part
    assert cli.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(parts)
    for line, part in zip(lines, parts.values(), strict=True):
        assert line.split()[0] == part.name and line.endswith(part.title)


def test_support_modules_measure_nothing_and_parts_stay_in_parts():
    known = set(benchmark_modules())
    for name, path in benchmark_modules().items():
        if name.startswith("benchmarks.parts") or name in ("benchmarks.registry",):
            continue
        source = path.read_text()
        assert "register(" not in source, f"{name} registers a part outside benchmarks/parts"
        into_parts = {m for m in imports_of(name, path, known) if m.startswith("benchmarks.parts")}
        assert not into_parts, f"support module {name} imports parts {into_parts}"


def test_no_import_cycles_among_benchmark_modules_lazy_imports_included():
    modules = benchmark_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    visiting, done = [], set()

    def visit(name: str) -> None:
        if name in visiting:
            raise AssertionError(f"import cycle: {' -> '.join(visiting[visiting.index(name) :])}")
        if name in done:
            return
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)
    assert "benchmarks.parts.neural" in graph["benchmarks.parts.neural_limits"]  # the graph sees


def test_every_benchmark_module_imports_in_a_fresh_interpreter():
    names = [n for n in benchmark_modules() if not n.endswith("__main__")]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["mdeq", "lm", "neural", "neural_limits"])
def test_parts_with_their_own_options_run_as_modules(module):
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.parts.{module}", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m benchmarks.parts.{module}")


def test_solver_lists_come_from_the_solver_registry(monkeypatch):
    assert set(classical_solvers()) <= set(nonlinear_solvers()) <= set(eq.SOLVERS)
    assert classical_solvers() == ("picard", "anderson", "broyden")
    assert [v.solver for v in solvers.DEFAULT_VARIANTS] == list(classical_solvers())
    assert overhead.Settings(problems=()).solvers == classical_solvers()

    class Halley(eq.Picard):
        name = "halley"

    monkeypatch.setitem(eq.SOLVERS, "halley", Halley)
    assert "halley" in nonlinear_solvers()  # a new solver joins the comparisons by itself


def test_no_benchmark_module_spells_out_a_list_of_solver_names():
    names = set(eq.SOLVERS)
    for name, path in benchmark_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1:
                values = [getattr(e, "value", None) for e in node.elts]
                assert not all(v in names for v in values), f"{name}:{node.lineno} lists solvers"


# ---------------------------------------------------------------- timing, meters, report


def test_interleaved_timing_rotates_order_and_reports_medians_and_ratios():
    now = itertools.count()
    clock_value = [0.0]
    order = []

    def clock():
        return clock_value[0]

    def candidate(name, cost):
        def run():
            order.append(name)
            clock_value[0] += cost * (1 + next(now) % 2)  # alternate rounds cost 1x and 2x

        return run

    timings = interleaved(
        {"a": candidate("a", 1.0), "b": candidate("b", 4.0)}, repeats=4, warmup=1, clock=clock
    )
    assert order[:2] == ["a", "b"]  # warm-up
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotated every round
    assert timings.samples == {"a": [1.0, 2.0, 1.0, 2.0], "b": [8.0, 4.0, 8.0, 4.0]}
    assert timings.median("a") == 1.5 and timings.median("b") == 6.0
    # the median of per-round ratios (8, 2, 8, 2), not the ratio of medians (4)
    assert timings.ratio("b", "a") == 5.0


def test_saved_tensor_bytes_counts_each_activation_once_and_skips_parameters():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(5, 8)
    with SavedTensorBytes(exclude=layer.parameters()) as saved:
        y = torch.tanh(layer(x))  # saves x (for the weight gradient) and tanh's output
        y = torch.tanh(layer(x))  # x again: the same storage, counted once
    assert saved.bytes == 3 * x.numel() * 4
    assert y.requires_grad


def test_peak_tensor_bytes_sees_a_temporary_allocation():
    def allocate():
        big = torch.ones(1000, 250)  # 1 MB, freed at once
        return float(big.sum())

    peak = peak_tensor_bytes(allocate, torch.device("cpu"))
    if peak is None:
        pytest.skip("this torch's profiler exposes no allocation events")
    assert 1_000_000 <= peak < 2_000_000


def test_table_formats_missing_values_and_rejects_unknown_columns():
    table = Table("t", [Column("a", "A", ".2f"), Column("b", "B")])
    table.add(a=1.234, b=None)
    assert "| 1.23 | n/a |" in table.to_markdown()
    assert format_value(True) == "yes"
    with pytest.raises(KeyError, match="no column"):
        table.add(c=1)


def test_counting_cell_counts_forward_calls_and_backward_passes():
    problem = tiny_tanh()
    counter = CountingCell(problem.cell)
    z = counter(problem.z0().requires_grad_(), problem.x)
    for _ in range(3):
        torch.autograd.grad(z, problem.cell.parameters(), torch.ones_like(z), retain_graph=True)
    assert (counter.forward_calls, counter.backward_passes) == (1, 3)


# ---------------------------------------------------------------- the parts, at tiny sizes


def tiny_solver_settings(**changes):
    settings = dict(
        problems=(tiny_tanh,),
        variants=(solvers.Variant("picard", "picard"), solvers.Variant("anderson", "anderson")),
        max_iter=100,
        starts=2,
        repeats=1,
        warmup=0,
    )
    settings.update(changes)
    return solvers.Settings(**settings)


def independent_nfe(problem, solver, tol, max_iter):
    with torch.no_grad():
        return eq.solve(
            problem.f, problem.z0(), solver, tol=tol, max_iter=max_iter, on_failure="ignore"
        ).nfe


def test_solvers_part_counts_match_independent_solves(config):
    pytest.importorskip("torchdeq")
    settings = tiny_solver_settings()
    section = solvers.run(config, settings)
    counts = section.table("Evaluations to tolerance and gradient agreement")
    assert counts.column("solver") == ["picard", "anderson"]
    rows = {r["solver"]: r for r in counts.rows}
    problem = tiny_tanh()
    for name in ("picard", "anderson"):
        expected = independent_nfe(problem, name, settings.tol, settings.max_iter)
        assert expected == int(rows[name]["nfe_fwd_text"].split()[0])
        assert rows[name]["cosine"] > 0.9999
        assert rows[name]["converged"] is True
    # plain iteration is the same sequence in both libraries
    picard = rows["picard"]
    assert abs(int(picard["nfe_fwd_text"].split()[0]) - int(picard["peer_nfe_fwd_text"])) <= 1
    times = section.table("Time and peak memory")
    assert all(r["step_ms"] > 0 and r["peer_step_ms"] > 0 for r in times.rows)
    # the bare cell work of our step can never take longer than our step
    assert all(r["floor_ratio"] <= r["step_ratio"] for r in times.rows)
    markdown = section.to_markdown()
    assert f"| {picard['nfe_fwd_text']} |" in markdown
    assert [c.passed for c in section.checks][0] is True  # gradients agree


def test_mdeq_problem_is_the_mdeq_cell_on_a_flat_state():
    problem = mdeq((4, 8), size=4, batch=2)
    shapes = problem.cell.shapes
    assert shapes == [(4, 4, 4), (8, 2, 2)]
    z = torch.randn(2, 4 * 16 + 8 * 4)
    state = (z[:, :64].view(2, 4, 4, 4), z[:, 64:].view(2, 8, 2, 2))
    expected = problem.cell.cell(state, problem.x)
    out = problem.f(z)
    torch.testing.assert_close(out[:, :64], expected[0].flatten(1))
    torch.testing.assert_close(out[:, 64:], expected[1].flatten(1))
    assert problem.z0().shape == z.shape == problem.cell.init_state(problem.x).shape


def _solver_row(converged, peer_converged, nfe, peer_nfe):
    return dict(
        solver="picard",
        problem="p",
        cosine=1.0,
        step_ratio=0.4,
        converged=converged,
        peer_converged=peer_converged,
        nfe_fwd=nfe,
        nfe_bwd=nfe,
        peer_nfe_fwd=peer_nfe,
        peer_nfe_bwd=peer_nfe,
    )


@pytest.mark.parametrize(
    "row, passed",
    [
        (_solver_row(True, True, 10, 12), True),
        (_solver_row(True, True, 13, 12), False),
        (_solver_row(True, False, 50, 20), True),  # only we reach the tolerance
        (_solver_row(False, True, 5, 20), False),  # only TorchDEQ does
        (_solver_row(False, False, 20, 20), True),  # neither within the same cap
        (_solver_row(False, False, 21, 20), False),
    ],
)
def test_solvers_nfe_check_compares_convergence_first(row, passed):
    nfe_check = solvers.checks([row])[1]
    assert nfe_check.passed is passed


def test_solvers_gradient_check_skips_rows_where_a_solve_did_not_converge():
    agreeing = _solver_row(True, True, 10, 10)
    unconverged = {**_solver_row(False, False, 20, 20), "cosine": 0.99, "problem": "q"}
    check = solvers.checks([agreeing, unconverged])[0]
    assert check.passed is True
    assert "1/1 rows" in check.measured and "not compared" in check.measured
    disagreeing = {**_solver_row(True, True, 10, 10), "cosine": 0.99}
    assert solvers.checks([agreeing, disagreeing])[0].passed is False


def test_solvers_part_without_torchdeq_skips_its_columns_with_a_note(config, monkeypatch):
    monkeypatch.setattr(peer, "available", lambda: (False, "TorchDEQ is not installed"))
    settings = tiny_solver_settings(variants=(solvers.Variant("anderson", "anderson"),))
    section = solvers.run(config, settings)
    (row,) = section.table("Time and peak memory").rows
    assert "peer_step_ms" not in row and row["step_ms"] > 0
    assert any("TorchDEQ columns skipped" in note for note in section.notes)
    assert section.checks[0].passed is None
    assert "n/a" in section.to_markdown()


def test_memory_part_deq_is_flat_and_explicit_grows_by_one_step_each(config):
    settings = memory.Settings(problems=(tiny_tanh,), depths=(2, 10, 20))
    section = memory.run(config, settings)
    rows = section.table("Memory of one training step").rows
    deq = [r["saved_mb"] for r in rows if r["model"] == "DEQ"]
    explicit = {r["depth"]: r["saved_mb"] for r in rows if r["model"] == "explicit"}
    assert len(set(deq)) == 1
    # one more cell application saves one more (batch, features) activation
    step_mb = TINY_TANH["batch"] * TINY_TANH["features"] * 4 / 2**20
    assert explicit[10] - explicit[2] == pytest.approx(8 * step_mb)
    assert explicit[20] - explicit[10] == pytest.approx(10 * step_mb)
    assert (config.out / "memory.png").stat().st_size > 1000
    saved_checks = [c for c in section.checks if "saved-for-backward" in c.target]
    assert len(saved_checks) == 2 and all(c.passed for c in saved_checks)


def test_linear_fit_and_spread():
    slope, r2 = memory.linear_fit([1, 2, 3], [2, 4, 6])
    assert slope == pytest.approx(2) and r2 == pytest.approx(1)
    assert memory.spread([1.0, 1.05]) == pytest.approx(0.05)


def test_overhead_part_ratio_is_solve_time_over_nfe_bare_calls(config):
    settings = overhead.Settings(
        problems=(tiny_tanh,), solvers=("anderson",), max_iter=100, repeats=1, warmup=0
    )
    section = overhead.run(config, settings)
    (row,) = section.table("Overhead per solver and problem size").rows
    assert row["nfe"] == independent_nfe(tiny_tanh(), "anderson", settings.tol, settings.max_iter)
    # one round: the ratio is exactly solve time / (NFE x the per-call bare time)
    assert row["ratio"] == pytest.approx(row["solve_ms"] / (row["cell_ms"] * row["nfe"]))
    assert 0 < row["outside"] < 1
    assert row["cell_us"] > 0 and row["step_us"] > 0 and row["loop_us"] > 0
    assert section.checks[0].passed is None  # no cell here costs >= 1 ms
    assert row["loop_share"] == pytest.approx(row["loop_us"] / row["cell_us"])
    assert row["floor_us"] > 0 and row["traffic_ratio"] > 0
    assert any(note.startswith("Fixed cost of the shared loop:") for note in section.notes)


def test_overhead_checks_only_judge_expensive_cells():
    def row(problem, solver, cell_ms, ratio, loop_share=0.01, traffic_ratio=None):
        return dict(problem=problem, solver=solver, cell_ms=cell_ms, ratio=ratio,
                    loop_share=loop_share, traffic_ratio=traffic_ratio)  # fmt: skip

    rows = [
        row("p", "anderson", 0.1, 3.0, 0.5, 4.0),
        row("q", "anderson", 2.0, 1.1, 0.04, 1.2),
        row("q", "picard", 2.0, 1.04),
    ]
    ratio, picard, loop, traffic = overhead.checks(rows)
    assert ratio.passed is True and "2/2 rows" in ratio.measured
    assert picard.passed is True and "1/1 rows" in picard.measured
    assert loop.passed is True and traffic.passed is True and "1/1 rows" in traffic.measured
    rows[1].update(ratio=1.3, loop_share=0.06, traffic_ratio=1.6)
    rows[2]["ratio"] = 1.06
    assert [check.passed for check in overhead.checks(rows)] == [False, False, False, False]


def test_traffic_model_counts_what_each_algorithm_must_move():
    from benchmarks.traffic import needed_bytes_per_entry, streaming_bandwidth

    assert needed_bytes_per_entry(eq.Picard(), 4, 30) == 0.0
    assert needed_bytes_per_entry(eq.Picard(damping=0.5), 4, 30) == 12.0
    # m = 5 float64 differences (Gram row) + 5 float32 differences (mix) + the vector passes
    assert needed_bytes_per_entry(eq.Anderson(m=5), 4, 30) == 40 + 28 + 36 + 12
    assert needed_bytes_per_entry(eq.Broyden(memory=2), 4, 3) == 2 * 0.5 * 2 * 4 + 8
    assert needed_bytes_per_entry(object(), 4, 30) is None
    assert streaming_bandwidth(1 << 20, torch.device("cpu"), time.perf_counter) > 1e8


def test_exact_gradient_matches_a_tight_implicit_solve():
    problem = conv(4, 4, 2)
    exact = gradients.exact_gradient(problem)
    p64 = problem.to(torch.device("cpu"), torch.float64)
    deq = eq.DEQ(p64.cell, "anderson", tol=1e-12, max_iter=500, backward=eq.Implicit("anderson"))
    p64.loss(deq(p64.x)).backward()
    torch.testing.assert_close(p64.parameter_gradient(), exact, rtol=1e-7, atol=1e-10)


def test_gradients_part_ranks_the_strategies_by_accuracy(config):
    settings = gradients.Settings(problems=(tiny_tanh,), repeats=1, warmup=0)
    section = gradients.run(config, settings)
    rows = {r["strategy"]: r for r in section.table("Gradient strategies").rows}
    assert rows["implicit"]["cosine"] > 0.9999
    assert rows["implicit"]["cosine"] > rows["one-step"]["cosine"]
    assert rows["implicit"]["relative"] == 1.0
    sweep = section.table("Implicit gradient against the solve tolerance").rows
    assert sweep[-1]["gap"] < sweep[0]["gap"]  # tighter solves, closer to exact
    assert all(c.passed for c in section.checks)


# ---------------------------------------------------------------- docs


def test_docs_are_generated_from_the_report(tmp_path):
    section = Section("demo", "Demo part", settings={"wall time": "90 s"})
    table = Table("Numbers", [Column("x", "x", ".1f")])
    table.add(x=2.5)
    section.tables.append(table)
    section.checks.append(Check("x small", "x = 2.5", False))
    report = Report(environment={"CPU": "Some CPU model"}, command="python -m benchmarks demo")
    report.sections.append(section)
    text = render_docs(report, tmp_path, tmp_path / "docs" / "performance.md")
    assert text.startswith("## Performance")
    assert "| CPU | Some CPU model |" in text
    assert "| 2.5 |" in text
    assert "x small: **NOT met** (x = 2.5)" in text
    assert "about 2 min" in text
    # the docs can be rewritten later from the saved report alone
    again = Report.from_json(report.to_json())
    assert again.to_markdown() == report.to_markdown()


def _one_part_report(name: str, value: float, date: str) -> Report:
    section = Section(name, f"Part {name}")
    table = Table("Numbers", [Column("x", "x", ".1f")])
    table.add(x=value)
    section.tables.append(table)
    section.checks.append(Check(f"{name} target", f"x = {value}", value < 3))
    report = Report(environment={"CPU": "Some CPU", "date": date}, command=f"bench {name}")
    report.sections.append(section)
    return report


def test_docs_keep_other_parts_and_rewrite_the_readme_summary(tmp_path):
    docs = tmp_path / "docs" / "performance.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold text\n{README_END}\n\n## After\n")
    write_docs(_one_part_report("a", 1.0, "day 1"), tmp_path, docs, readme)
    write_docs(_one_part_report("b", 5.0, "day 2"), tmp_path, docs, readme)
    merged = write_docs(_one_part_report("a", 2.0, "day 3"), tmp_path, docs, readme)
    assert [s.name for s in merged.sections] == ["a", "b"]  # a replaced in place, b kept
    text = docs.read_text()
    assert "| 2.0 |" in text and "| 5.0 |" in text and "| 1.0 |" not in text
    assert "day 3" in text and "day 2" in text
    summary = readme.read_text()
    assert "old text" not in summary and summary.endswith(f"{README_END}\n\n## After\n")
    assert "1 of 1 targets met\n" in summary  # a met target is counted
    assert "0 of 1 targets met; b target: **NOT met** (x = 5.0)" in summary


@pytest.mark.slow
def test_neural_limits_part_on_a_tiny_trained_mdeq(tmp_path):
    """The bounds study on a tiny MDEQ trained from the command line, as a report section."""
    from dataclasses import replace

    from tiny_runs import tiny

    from benchmarks.parts import neural_limits
    from equilibria.cli import main

    pytest.importorskip("sklearn")
    assert main(["train", "--out", str(tmp_path / "run"), *tiny()]) == 0
    quick = neural_limits.Settings.quick()
    model = replace(quick.model, solver_batches=1, batch_size=16, cap=12)
    settings = replace(quick, model=model, widths=(4,))
    results = neural_limits.measure(tmp_path / "run" / "checkpoint.pt", settings, log=print)
    section = neural_limits.render(results)
    capacity, rules = section.tables
    assert [r["initializer"] for r in capacity.rows] == ["none (zeros)", "hidden width 4"]
    assert len(rules.rows) == 6 and all(r["zero_median"] >= 1 for r in rules.rows)
    assert section.name == "neural-limits" and "Update rules" in section.to_markdown()
