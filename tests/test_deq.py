"""The DEQ layer: initial states, statistics, train/eval settings, per-call overrides."""

import copy
import warnings

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import ConvCell, TanhCell


def test_output_is_the_fixed_point_and_differentiable():
    cell = TanhCell(8)
    x = torch.randn(5, 8, requires_grad=True)
    deq = eq.DEQ(cell, tol=1e-6)
    z = deq(x)
    torch.testing.assert_close(z, cell(z, x), atol=1e-5, rtol=0)
    assert deq.stats.converged.all() and deq.stats.converged.shape == (5,)
    assert isinstance(deq.stats.forward_nfe, int) and deq.stats.forward_nfe > 1
    assert deq.stats.abs_residual.shape == deq.stats.rel_residual.shape == (5,)
    z.pow(2).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in cell.parameters())


def test_zero_initial_state_unless_the_cell_defines_one():
    class Plain(nn.Module):
        def forward(self, z, x):
            self.first = getattr(self, "first", z.clone())
            return 0.5 * z + x

    cell = Plain()
    x = torch.randn(2, 3)
    z = eq.DEQ(cell, tol=1e-6)(x)
    assert torch.equal(cell.first, torch.zeros_like(x))
    torch.testing.assert_close(z, 2 * x, atol=1e-5, rtol=0)

    class WithInit(Plain):
        def init_state(self, x):
            return torch.full_like(x, 7.0)

    cell = WithInit()
    eq.DEQ(cell, tol=1e-6)(x)
    assert torch.equal(cell.first, torch.full_like(x, 7.0))
    given = torch.full_like(x, -1.0)
    cell = WithInit()
    eq.DEQ(cell, tol=1e-6)(x, z0=given)
    assert torch.equal(cell.first, given)


def test_eval_mode_uses_its_own_settings():
    deq = eq.DEQ(
        TanhCell(8, contraction=0.99),
        "picard",
        tol=1e-9,
        max_iter=4,
        eval_max_iter=60,
        eval_solver="anderson",
        on_failure="ignore",
    )
    x = torch.randn(3, 8)
    deq(x)
    assert deq.stats.forward_nfe == 4 and deq.stats.forward.solver == "picard"
    deq.eval()
    with torch.no_grad():
        deq(x)
    assert deq.stats.forward.solver == "anderson" and deq.stats.forward_nfe > 4
    assert deq.settings.max_iter == 60
    deq.train()
    assert deq.settings.max_iter == 4


def test_per_call_overrides_give_elastic_compute():
    deq = eq.DEQ(TanhCell(8), tol=0.0, max_iter=30, patience=None, on_failure="ignore")
    x = torch.randn(3, 8)
    residuals = []
    for cap in (1, 2, 4, 8):
        with torch.no_grad():
            deq(x, max_iter=cap)
        assert deq.stats.forward_nfe == cap
        residuals.append(float(deq.stats.abs_residual.max()))
    assert residuals == sorted(residuals, reverse=True)
    deq(x, solver="broyden", tol=1e-3)
    assert deq.stats.forward.solver == "broyden" and deq.stats.forward.tol == 1e-3


def test_nonconvergence_warns_returns_best_iterate_and_is_configurable():
    x = torch.randn(3, 8)
    deq = eq.DEQ(TanhCell(8, contraction=0.99), "picard", tol=1e-12, max_iter=3)
    with pytest.warns(
        eq.ConvergenceWarning, match="the cell did not converge: picard stopped at the evaluation"
    ):
        z = deq(x)
    assert not deq.stats.converged.any()
    forward = deq.stats.forward  # the best iterate (here the last), and the output is its image
    torch.testing.assert_close(forward.abs_residual, forward.abs_trace.min(dim=0).values)
    torch.testing.assert_close(z, deq.cell(forward.z, x), rtol=0, atol=0)
    quiet = eq.DEQ(TanhCell(8), "picard", tol=1e-12, max_iter=3, on_failure="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(x)
    strict = eq.DEQ(TanhCell(8), "picard", tol=1e-12, max_iter=3, on_failure="raise")
    with pytest.raises(eq.NotConvergedError, match="best iterate"):
        strict(x)


def conv_gradients(cell, x, solver, backward, tol):
    """Gradients of a fixed loss with respect to x and every cell parameter, and the stats."""
    x = x.clone().requires_grad_()
    cell.zero_grad()
    deq = eq.DEQ(cell, solver, tol=tol, max_iter=300, backward=backward)
    (deq(x) * torch.linspace(-1, 2, 6, dtype=x.dtype)).sum().backward()
    return [x.grad, *(p.grad.clone() for p in cell.parameters())], deq.stats


def relative_error(grads, references):
    pairs = zip(grads, references, strict=True)
    return max(float((g.double() - r).norm() / r.norm()) for g, r in pairs)


@pytest.mark.parametrize(
    "solver",
    [name for name, cls in eq.SOLVERS.items() if not (cls.affine_only or cls.needs_splitting)],
)
def test_conv_cell_with_every_solver_and_backward(solver):
    """Every backward through a float32 conv cell agrees with the same computation in float64;
    implicit and unrolled gradients also agree with the exact (tightly solved) implicit one."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    cell = ConvCell(8)
    cell64 = copy.deepcopy(cell).double()
    exact, _ = conv_gradients(cell64, x.double(), "anderson", eq.Implicit(tol=1e-10), 1e-10)
    # float32 agreement with float64 (same settings); unrolled differentiates the solver's
    # own arithmetic, which amplifies round-off (Anderson's least-squares step most)
    same = {
        "implicit": 1e-5,
        "phantom": 1e-5,
        "onestep": 1e-5,
        "unrolled": 2e-2,
        "reversible": 1e-4,
    }
    to_exact = {
        "implicit": 1e-3,
        "unrolled": 5e-2,
        "reversible": 1e-3,
    }  # truncated at the solve's tolerance
    for name in eq.BACKWARDS:
        backward = eq.Implicit(tol=1e-5, max_iter=300) if name == "implicit" else name
        grads, stats = conv_gradients(cell, x, solver, backward, 1e-6)
        assert grads[0].shape == x.shape and stats.forward.all_converged
        references, _ = conv_gradients(cell64, x.double(), solver, backward, 1e-6)
        assert relative_error(grads, references) < same[name], name
        if name in to_exact:
            assert relative_error(grads, exact) < to_exact[name], name


def test_no_graph_is_built_without_grad():
    deq = eq.DEQ(TanhCell(8), tol=1e-6)
    with torch.no_grad():
        z = deq(torch.randn(2, 8))
    assert not z.requires_grad


class CallCounter(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell, self.calls = cell, 0

    def forward(self, z, x):
        self.calls += 1
        return self.cell(z, x)


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_without_grad_the_output_is_the_solves_own_last_image(solver):
    torch.manual_seed(0)
    cell = CallCounter(TanhCell(6))
    deq = eq.DEQ(cell, solver, tol=1e-6, max_iter=40).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        out = deq(x)
        assert cell.calls == deq.stats.forward_nfe  # no application beyond the solve's
        torch.testing.assert_close(out, cell.cell(deq.stats.forward.z, x), rtol=0, atol=0)
    sol = eq.solve(
        lambda z: cell.cell(z, x), torch.zeros(5, 6), solver, max_iter=3, on_failure="ignore"
    )
    with torch.no_grad():  # the image of each sample's best iterate, also for unconverged ones
        torch.testing.assert_close(sol.fz, cell.cell(sol.z, x), rtol=0, atol=0)


def test_solver_objects_and_options_are_accepted():
    deq = eq.DEQ(TanhCell(8), eq.Anderson(m=3, beta=0.9))
    assert deq.settings.solver == eq.Anderson(m=3, beta=0.9)
    deq = eq.DEQ(TanhCell(8), "broyden", memory=7)
    assert deq.settings.solver == eq.Broyden(memory=7)
    assert "Broyden(memory=7" in repr(deq)


def test_compiled_cell_and_implicit_backward():
    """The output is an ordinary cell application, so a compiled cell works unchanged."""
    pytest.importorskip("torch._dynamo")
    cell = TanhCell(8)
    compiled = torch.compile(cell, backend="eager")
    x = torch.randn(3, 8)
    reference = eq.DEQ(cell, tol=1e-5)(x)
    deq = eq.DEQ(compiled, tol=1e-5)
    out = deq(x)
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert cell.linear.weight.grad is not None
