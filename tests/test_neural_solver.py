"""The learned solver: training lowers its loss, the safeguard holds, files round-trip."""

import pytest
import torch

import equilibria as eq
from equilibria.cells import TanhCell
from equilibria.models import DEQTransformer
from equilibria.neural import (
    History,
    NeuralSolver,
    SolverTraining,
    anderson_weights,
    fit_neural_solver,
    fixed_point_targets,
)
from equilibria.neural.training import fit_initializer, relative_error, unrolled_loss


def tiny_deq():
    torch.manual_seed(0)
    return eq.DEQ(TanhCell(16, contraction=0.9), tol=1e-5)


def batches(n=4, size=16, features=16):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(size, features, generator=gen) for _ in range(n)]


def test_untrained_network_reproduces_anderson_weights():
    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    z = torch.randn(16, 16)
    history = History.empty(z, solver.m)
    for _ in range(3):
        g = deq.cell(z, x) - z
        history = history.push(z, g)
        z = z + 0.5 * g
    alpha, beta, correction = solver.mixer(history)
    torch.testing.assert_close(alpha, anderson_weights(history))
    assert torch.all(correction == 0)
    torch.testing.assert_close(alpha.sum(1), torch.ones(16))
    assert torch.all((beta > 0.9) & (beta < 1))


def test_anderson_weights_are_finite_on_a_singular_history():
    z = torch.zeros(2, 5)
    history = History.empty(z, 4)
    for _ in range(3):
        history = history.push(z, torch.zeros_like(z))  # all residuals zero: Gram is 0
    alpha = anderson_weights(history)
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))


def test_training_reduces_the_loss_on_a_frozen_deq():
    deq = tiny_deq()
    before = [p.clone() for p in deq.parameters()]
    config = SolverTraining(epochs=15, unroll=4, lr=3e-3)
    solver, log = fit_neural_solver(deq, batches(), config=config, progress=False)
    assert log.loss[-1] < 0.7 * log.loss[0]
    assert log.init_error[-1] < log.init_error[0]
    assert all(torch.equal(a, b) for a, b in zip(before, deq.parameters(), strict=True))
    assert all(p.requires_grad for p in deq.parameters())  # unfrozen afterwards


def test_usable_wherever_a_solver_is_accepted():
    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    z = deq(x, solver=solver)  # the learned initial guess is used when no z0 is given
    assert deq.stats.forward.solver == "neural" and deq.stats.converged.all()
    first = deq.stats.forward.abs_trace[0]
    expected = (deq.cell(solver.initial_state(x), x) - solver.initial_state(x)).norm(dim=1)
    torch.testing.assert_close(first, expected.detach())
    assert isinstance(eq.NeuralSolver, type) and eq.DEQ(deq.cell, solver=solver)
    z.sum().backward()
    assert deq.stats.backward.solver == "picard"  # the adjoint solve is the classical default
    sol = eq.solve(lambda v: deq.cell(v, x), solver.initial_state(x), solver, tol=1e-6)
    assert sol.status == eq.Status.CONVERGED


def test_safeguard_never_ends_a_step_worse_than_both_current_and_classical():
    """Sabotage the network (huge corrections): every step must still be safe."""
    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    with torch.no_grad():
        solver.mixer.correction_head.bias.fill_(5.0)
        solver.mixer.correction_head.weight.normal_(0, 3.0)

    def f(z):
        return deq.cell(z, x)

    budget = eq.solvers.EvaluationBudget(f, 1000)
    z = torch.zeros(16, 16)
    with torch.no_grad():
        fz = f(z)
        state = solver.init(z, fz, fz - z)
        for _ in range(12):
            g = fz - z
            history = state.history.push(z, g)
            classical = history.mix(anderson_weights(history), torch.ones(16, 1))
            classical_res = (f(classical) - classical).norm(dim=1)
            step = solver.step(budget, z, fz, g, state)
            res = (step.fz - step.z).norm(dim=1)
            assert torch.all(
                (res <= g.norm(dim=1) * (1 + 1e-6)) | (res <= classical_res * (1 + 1e-6))
            )
            z, fz, state = step.z, step.fz, step.state
        solution = eq.solve(f, torch.zeros(16, 16), solver, tol=1e-5, max_iter=200)
    assert solution.status == eq.Status.CONVERGED


def test_save_load_round_trip(tmp_path):
    deq = tiny_deq()
    solver, _ = fit_neural_solver(deq, batches(2), config=SolverTraining(epochs=2), progress=False)
    path = tmp_path / "solver.pt"
    solver.save(path)
    loaded = NeuralSolver.load(path)
    for a, b in zip(solver.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = batches(1)[0]
    torch.testing.assert_close(loaded.initial_state(x), solver.initial_state(x))
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def test_bad_files_and_wrong_models_get_clear_errors(tmp_path):
    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    with pytest.raises(FileNotFoundError, match="no neural solver file"):
        NeuralSolver.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(eq.EquilibriaError, match="not a readable neural solver file"):
        NeuralSolver.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(eq.EquilibriaError, match="not a neural solver file"):
        NeuralSolver.load(other)
    # trained for 16 features, used on a 24-feature DEQ
    wide = eq.DEQ(TanhCell(24), tol=1e-4)
    with pytest.raises(
        eq.StateMismatchError, match=r"built for inputs of per-sample shape \(16,\)"
    ):
        wide(torch.randn(4, 24), solver=solver)
    with pytest.raises(eq.StateMismatchError, match=r"trained for states of per-sample shapes"):
        wide(torch.randn(4, 24), z0=torch.zeros(4, 24), solver=solver)
    with pytest.raises(eq.StateMismatchError, match=r"built for inputs of per-sample shape"):
        solver.initial_state(torch.randn(4, 24))


def test_image_states_and_tuple_states_get_an_initializer():
    x = torch.randn(2, 8, 6, 6)
    solver = NeuralSolver.for_model(x, torch.zeros_like(x), init_width=0)
    assert solver.initial_state(x).shape == x.shape
    mixer = sum(p.numel() for p in solver.mixer.parameters())
    assert solver.num_parameters() == mixer + (8 + 1) * 8  # one 1x1 head: 8 -> 8 channels
    assert mixer < 1000
    wide = NeuralSolver.for_model(x, torch.zeros_like(x), init_width=4)
    hidden = 8 * 4 * 9 + 4  # a 3x3 conv 8 -> 4 channels, then the head reads 8 + 4 channels
    assert wide.num_parameters() == mixer + hidden + (8 + 4 + 1) * 8
    assert wide.initial_state(x).shape == x.shape
    tuple_solver = NeuralSolver.for_model(x, (torch.zeros(2, 8, 6, 6), torch.zeros(2, 16, 3, 3)))
    fine, coarse = tuple_solver.initial_state(x)
    assert fine.shape == (2, 8, 6, 6) and coarse.shape == (2, 16, 3, 3)
    with pytest.raises(eq.StateMismatchError, match="same number of dimensions"):
        NeuralSolver.for_model(x, torch.zeros(2, 10))


def test_sequence_initializer_is_causal_takes_any_length_and_the_model_input_tuple():
    torch.manual_seed(0)
    model = DEQTransformer(vocab=11, width=16, heads=2, max_iter=30, tol=1e-6)
    model.eval()
    tokens = torch.randint(11, (3, 10))
    x = model.embed(tokens)
    solver = NeuralSolver.for_model((x,), torch.zeros_like(x), init_width=4, init_skip=False)
    hidden = 16 * 4 * 3 + 4  # causal conv over 3 positions, 16 -> 4 features
    assert solver.num_parameters() == sum(p.numel() for p in solver.mixer.parameters()) + (
        hidden + (4 + 1) * 16
    )  # the head reads the 4 hidden features only (no skip path)
    z0 = solver.initial_state((x,))
    changed = x.clone()
    changed[:, 6:] = torch.randn(3, 4, 16)  # later positions only
    z1 = solver.initial_state((changed,))
    torch.testing.assert_close(z1[:, :6], z0[:, :6], rtol=0, atol=0)
    assert not torch.allclose(z1[:, 6:], z0[:, 6:])
    longer = model.embed(torch.randint(11, (3, 25)))
    assert solver.initial_state((longer,)).shape == (3, 25, 16)
    with torch.no_grad():  # usable as the model's solver on other lengths too
        reference = model(tokens[:, :7], solver="anderson")
        learned = model(tokens[:, :7], solver=solver)
    torch.testing.assert_close(learned, reference, rtol=1e-4, atol=1e-4)
    with pytest.raises(eq.StateMismatchError, match=r"per-sample shape \(length, 16\)"):
        solver.initial_state((torch.randn(3, 10, 8),))
    with pytest.raises(TypeError, match="first element of a tuple/list input"):
        solver.initial_state("tokens")
    with pytest.raises(ValueError, match="needs a hidden layer"):
        NeuralSolver.for_model(x, torch.zeros_like(x), init_width=0, init_skip=False)


def test_initializer_phase_fits_the_fixed_points_without_touching_the_mixer():
    deq = tiny_deq()
    xs = batches()
    solver = NeuralSolver.for_model(xs[0], deq.initial_state(xs[0]))
    mixer = [p.clone() for p in solver.mixer.parameters()]
    config = SolverTraining(epochs=1, init_epochs=40, lr=1e-2)
    targets = [fixed_point_targets(deq, x, config) for x in xs]

    def init_error():
        with torch.no_grad():
            return sum(
                relative_error(solver.initial_state(x), t).mean()
                for x, t in zip(xs, targets, strict=True)
            )

    before = init_error()
    fit_initializer(solver, xs, targets, config)
    assert init_error() < 0.5 * before
    assert all(torch.equal(a, b) for a, b in zip(mixer, solver.mixer.parameters(), strict=True))


def test_residual_term_enters_the_loss():
    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    config = SolverTraining(unroll=3, init_weight=0.0, aux_weight=0.0)
    target = fixed_point_targets(deq, x, config)
    plain, _, _ = unrolled_loss(solver, deq, x, target, config, 0.0)
    weighted = SolverTraining(unroll=3, init_weight=0.0, aux_weight=0.0, residual_weight=1.0)
    with_residual, _, _ = unrolled_loss(solver, deq, x, target, weighted, 0.0)
    assert with_residual > plain


def test_benchmark_curves_count_every_evaluation_and_the_first_to_reach_a_target():
    from benchmarks.residuals import best_residuals, evaluations_to

    deq = tiny_deq()
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, deq.initial_state(x))
    with torch.no_grad():
        solver.mixer.correction_head.bias.fill_(5.0)  # a poor update: the safeguard steps in
        solver.mixer.correction_head.weight.normal_(0, 3.0)
    calls = []
    counted = eq.DEQ(_Counting(deq.cell, calls), tol=1e-5)
    curve = best_residuals(counted, x, solver.initial_state(x), solver, 15)
    assert len(calls) == 15 and curve.shape == (15, 16)  # one row per evaluation
    assert torch.all(curve[1:] <= curve[:-1])  # best so far
    first = evaluations_to(curve, 1e-2)
    reached = curve <= 1e-2
    for sample in range(16):
        if reached[:, sample].any():
            index = int(first[sample]) - 1
            assert reached[index, sample] and not reached[:index, sample].any()
        else:
            assert first[sample] == float("inf")


class _Counting(torch.nn.Module):
    def __init__(self, cell, calls):
        super().__init__()
        self.cell, self.calls = cell, calls

    def forward(self, z, x):
        self.calls.append(1)
        return self.cell(z, x)


@pytest.mark.slow
def test_benchmark_pipeline_on_a_tiny_trained_mdeq(tmp_path, capsys):
    """Train a tiny MDEQ from the command line, then run the whole benchmark on it."""
    from tiny_runs import tiny

    from benchmarks.parts.neural import Settings, render, run
    from equilibria.cli import main

    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    assert main(["train", "--out", str(tmp_path / "run"), *tiny()]) == 0
    settings = Settings(
        solver_batches=1,
        batch_size=32,
        training=SolverTraining(epochs=1, unroll=2, init_epochs=2),
        targets=(1e-1,),
        headline=1e-1,
        cap=12,
        budgets=(1, 2),
        repeats=1,
        test_batches=1,
    )
    results = run(tmp_path / "bench", settings, tmp_path / "run" / "checkpoint.pt", log=print)
    assert set(results["curves"]) == {
        "picard",
        "anderson",
        "broyden",
        "initializer + anderson",
        "neural",
    }
    assert len(results["curves"]["anderson"]["worst"]) == 12
    assert 0 < results["initializer_cost"] < 1
    assert results["solver_parameters"] > 0 and results["test_samples"] == 32
    section = render(results, tmp_path / "bench")
    assert len(section.checks) == 5 and "solver size" in section.to_markdown()
    assert (tmp_path / "bench" / "neural_residual_vs_nfe.png").is_file()


def test_a_file_whose_weights_do_not_fit_its_configuration_is_a_clear_error(tmp_path):
    x = batches(1)[0]
    solver = NeuralSolver.for_model(x, torch.zeros_like(x), init_width=4)
    path = tmp_path / "solver.pt"
    solver.save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["init_width"] = 6  # the stored weights are for 4 hidden features
    torch.save(payload, path)
    with pytest.raises(eq.EquilibriaError, match="do not match its own solver configuration"):
        NeuralSolver.load(path)


@pytest.mark.slow
def test_benchmark_pipeline_on_a_tiny_language_model(tmp_path):
    """A tiny DEQ-Transformer from the command line, then the whole benchmark on it."""
    from dataclasses import replace

    from test_lm import TINY_LM

    from benchmarks.parts.neural import Settings, render, run
    from equilibria.cli import main

    pytest.importorskip("matplotlib")
    assert main(["train", "--out", str(tmp_path / "run"), *TINY_LM, "optim.epochs=1"]) == 0
    settings = replace(Settings.language(quick=True), cap=12, batch_size=4)
    results = run(tmp_path / "bench", settings, tmp_path / "run" / "checkpoint.pt", log=print)
    assert results["task"] == "lm" and results["test_solves"] == 4
    assert results["test_samples"] == 4 * 12  # characters predicted
    assert all(2 < v < 10 for v in results["task_metric"]["neural"])  # bits per character
    section = render(results, tmp_path / "bench")
    markdown = section.to_markdown()
    assert "Validation bits/char at a fixed NFE budget" in markdown
    assert "median NFE per window" in markdown
    assert (tmp_path / "bench" / "neural_lm_bits_per_char_vs_nfe.png").is_file()
