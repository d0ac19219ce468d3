"""The reversible backward: exact gradients of its own forward iteration, memory flat in the
number of steps, and clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.config import Config, ConfigError
from equilibria.errors import NonFiniteError, StateMismatchError, UnsupportedError
from equilibria.models import MDEQCell, build_model
from equilibria.reversible import ReconstructionWarning, Reversible, auto_interval
from equilibria.stability.dropout import masks_held
from equilibria.stability.normalization import parametrizations_cached

F64 = torch.float64
a = torch.tensor(0.3, requires_grad=True)  # a plain tensor closed over


def unrolled(f, z0, b, tol, max_iter, stop_mode="rel"):
    """The reference: the reversible forward written out, per-sample stopping included, under
    ordinary autograd (memory grows with the steps)."""
    y = z = z0
    fz = f(z)
    done = torch.zeros(z0.shape[0], dtype=torch.bool)
    max_steps = (max_iter - 1) // 2
    for step in range(max_steps + 1):
        res = (fz - z).norm(dim=1)
        if stop_mode == "rel":
            res = res / fz.norm(dim=1)
        done = done | (res <= tol)
        if bool(done.all()) or step == max_steps:
            break
        y_next = (1 - b) * y + b * fz
        z_next = (1 - b) * z + b * f(y_next)
        keep = ~done.unsqueeze(1)
        y, z = torch.where(keep, y_next, y), torch.where(keep, z_next, z)
        fz = f(z)
    return z


def tanh_problem(batch=5, d=6):
    torch.manual_seed(0)
    w = (torch.randn(d, d, dtype=F64) * 0.25).requires_grad_()
    x = torch.randn(batch, d, dtype=F64, requires_grad=True)
    # samples of different sizes converge after different numbers of steps
    scale = torch.linspace(0.1, 2.0, batch, dtype=F64).unsqueeze(1)
    return w, x, scale


def assert_close(got, want, atol=1e-10):
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=0, atol=atol), float((g - w).abs().max())


@pytest.mark.parametrize("b", [0.5, 0.8, 1.3])
def test_tensor_state_gradient_equals_autograd_through_the_iterations(b):
    w, x, scale = tanh_problem()
    inject = x * scale  # a closed-over tensor that is not a leaf

    def f(z):
        return torch.tanh(z @ w + inject)

    z0 = torch.zeros(5, 6, dtype=F64)
    kw = dict(tol=1e-6, max_iter=41, on_failure="ignore")
    sol = eq.solve(f, z0, backward=Reversible(b), **kw)
    ref = unrolled(f, z0, b, 1e-6, 41)
    assert torch.equal(sol.z.detach(), ref.detach())
    weight = torch.randn(5, 6, dtype=F64)
    got = torch.autograd.grad((sol.z * weight).sum(), [w, x], retain_graph=True)
    want = torch.autograd.grad((ref * weight).sum(), [w, x])
    assert_close(got, want)
    assert sol.backward_nfe > 0 and sol.solver == "reversible"


def test_per_sample_stopping_gives_each_sample_its_own_step_count():
    w, x, scale = tanh_problem()
    inject = (x * scale).detach()
    sol = eq.solve(
        lambda z: torch.tanh(z @ w + inject),
        torch.zeros(5, 6, dtype=F64),
        backward="reversible",
        tol=1e-8,
        max_iter=201,
        stop_mode="abs",
    )
    assert sol.status == eq.Status.CONVERGED and sol.all_converged
    # the trace of a sample frozen early stays constant from its stop on
    trace = sol.abs_trace
    assert trace.shape == (sol.nfe // 2 + 1, 5)
    stopped = (trace <= 1e-8).float().argmax(dim=0)
    assert len(set(stopped.tolist())) > 1


def test_tuple_state_gradient_equals_autograd():
    torch.manual_seed(1)
    a = (torch.randn(4, 4, dtype=F64) * 0.3).requires_grad_()
    c = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)

    def f(state):
        u, v = state
        u_next = torch.tanh(u @ a + v.flatten(1)[:, :4].sum(1, keepdim=True) * 0.1 + 0.5)
        v_next = torch.sin(0.4 * v + c + u.mean(1, keepdim=True).unsqueeze(2))
        return u_next, v_next

    z0 = (torch.zeros(3, 4, dtype=F64), torch.zeros(3, 2, 2, dtype=F64))
    sol = eq.solve(f, z0, backward=Reversible(0.6), tol=1e-9, max_iter=61, on_failure="ignore")
    assert isinstance(sol.z, tuple) and sol.z[1].shape == (3, 2, 2)

    def flat_f(flat):
        u, v = flat[:, :4], flat[:, 4:].reshape(3, 2, 2)
        out = f((u, v))
        return torch.cat([out[0], out[1].flatten(1)], dim=1)

    ref = unrolled(flat_f, torch.zeros(3, 8, dtype=F64), 0.6, 1e-9, 61)
    loss = sol.z[0].sum() + (sol.z[1] ** 2).sum()
    ref_loss = ref[:, :4].sum() + (ref[:, 4:] ** 2).sum()
    assert_close(torch.autograd.grad(loss, [a, c]), torch.autograd.grad(ref_loss, [a, c]))


def test_deq_gradients_reach_module_parameters_and_the_encoder():
    torch.manual_seed(2)
    cell = eq.cells.TanhCell(8).double()
    encoder = nn.Linear(5, 8).double()
    deq = eq.DEQ(cell, backward="reversible", tol=1e-7, max_iter=51, on_failure="ignore")
    inputs = torch.randn(4, 5, dtype=F64)
    out = deq(encoder(inputs))
    params = [*cell.parameters(), *encoder.parameters()]
    got = torch.autograd.grad(out.square().sum(), params)
    x = encoder(inputs)
    ref = unrolled(lambda z: cell(z, x), torch.zeros(4, 8, dtype=F64), 0.5, 1e-7, 51)
    assert_close(got, torch.autograd.grad(ref.square().sum(), params))
    assert deq.stats.backward_nfe is None or deq.stats.backward_nfe >= 0


class DropoutCell(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.linear = nn.Linear(d, d)
        self.drop = eq.VariationalDropout1d(0.3)
        with torch.no_grad():
            self.linear.weight.mul_(0.4)

    def forward(self, z, x):
        return torch.tanh(self.drop(self.linear(z)) + x)


def test_rebuilt_steps_see_the_forward_dropout_masks_and_normalized_weights():
    cell = eq.weight_norm(DropoutCell(8)).double()
    x = torch.randn(6, 8, dtype=F64, requires_grad=True)
    deq = eq.DEQ(cell, backward="reversible", tol=1e-8, max_iter=41, on_failure="ignore")
    torch.manual_seed(7)
    out = deq(x)
    params = [x, *cell.parameters()]
    got = torch.autograd.grad(out.sum(), params)
    torch.manual_seed(7)  # the same masks, drawn at the first application
    with parametrizations_cached(cell), masks_held(cell):
        ref = unrolled(lambda z: cell(z, x), torch.zeros(6, 8, dtype=F64), 0.5, 1e-8, 41)
    assert torch.equal(out.detach(), ref.detach())
    assert_close(got, torch.autograd.grad(ref.sum(), params))


def saved_bytes(max_iter, checkpoint_every, precision="float64"):
    torch.manual_seed(3)
    cell = eq.cells.TanhCell(16)
    x = torch.randn(4, 16, requires_grad=True)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sol = eq.solve(
            lambda z: cell(z, x),
            torch.zeros(4, 16),
            backward=Reversible(0.5, checkpoint_every=checkpoint_every, precision=precision),
            tol=0.0,
            max_iter=max_iter,
            patience=None,
            on_failure="ignore",
        )
    assert sol.nfe == max_iter - (max_iter - 1) % 2
    return total


@pytest.mark.parametrize(("precision", "state_dtype"), [("float64", F64), ("native", None)])
def test_saved_memory_is_flat_in_the_number_of_steps(precision, state_dtype):
    assert saved_bytes(11, None, precision) == saved_bytes(201, None, precision)
    # kept states: two per interval, in the states' dtype; nothing else grows
    state = 4 * 16 * (state_dtype or torch.float32).itemsize
    interval = auto_interval(0.5, torch.float32, state_dtype, elements=4 * 16)
    grown = saved_bytes(201, "auto", precision) - saved_bytes(11, None, precision)
    assert grown == 2 * state * (99 // interval)


def test_the_automatic_interval_follows_the_dtypes_and_the_state_size():
    assert [auto_interval(b, torch.float32) for b in (0.5, 0.8, 1.2, 1.5)] == [5, 2, 2, 5]
    wide = [auto_interval(b, torch.float32, F64, 10**5) for b in (0.5, 0.8, 1.2, 1.5)]
    assert wide == [7, 3, 3, 7]
    assert auto_interval(0.5, torch.float32, F64, 10**3) == 13
    assert auto_interval(0.5, torch.bfloat16, F64, 10**5) == 23
    assert auto_interval(0.5, torch.float32, F64, 10**9) == 1
    assert Reversible().interval(F64, 10**5) == auto_interval(0.5, F64) == 13


def float32_gradient_error(checkpoint_every, precision="float64"):
    torch.manual_seed(4)
    cell = eq.cells.TanhCell(32)
    x64 = torch.randn(8, 32, dtype=F64)
    grads = []
    for dtype in (torch.float32, F64):
        model = cell.to(dtype)
        x = x64.to(dtype)
        sol = eq.solve(
            lambda z, m=model, x=x: m(z, x),
            torch.zeros(8, 32, dtype=dtype),
            backward=Reversible(0.5, checkpoint_every=checkpoint_every, precision=precision),
            tol=0.0,
            max_iter=81,
            patience=None,
            on_failure="ignore",
        )
        grads.append(
            torch.cat(
                [g.flatten() for g in torch.autograd.grad(sol.z.sum(), list(model.parameters()))]
            ).double()
        )
    return float((grads[0] - grads[1]).norm() / grads[1].norm())


@pytest.mark.parametrize("precision", ["float64", "native"])
def test_float32_rebuild_is_accurate_with_kept_states_and_warns_without(precision):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReconstructionWarning)
        assert float32_gradient_error("auto", precision) < 1e-4
    with pytest.warns(ReconstructionWarning, match="checkpoint_every"):
        float32_gradient_error(None, precision)


def mdeq_gradient_error(precision, steps=10):
    """The float32 gradient of an untrained MDEQ cell (GroupNorm at states near zero: a large
    Lipschitz constant) after `steps` steps, relative to the float64 one."""
    torch.manual_seed(0)
    cell = MDEQCell((8, 8), groups=4)
    x64 = torch.randn(2, 8, 8, 8, dtype=F64)
    grads = []
    for dtype in (torch.float32, F64):
        model = cell.to(dtype)
        x = x64.to(dtype)
        z0 = (torch.zeros(2, 8, 8, 8, dtype=dtype), torch.zeros(2, 8, 4, 4, dtype=dtype))
        exact = Reversible(0.5, checkpoint_every=1)
        sol = eq.solve(
            lambda z, m=model, x=x: m(z, x),
            z0,
            backward=Reversible(0.5, precision=precision) if dtype != F64 else exact,
            tol=0.0,
            max_iter=2 * steps + 1,
            patience=None,
            on_failure="ignore",
        )
        assert sol.z[0].dtype == sol.abs_trace.dtype == dtype
        weights = [torch.linspace(-1, 1, t.numel(), dtype=dtype).view_as(t) for t in sol.z]
        loss = sum((t * w).sum() for t, w in zip(sol.z, weights, strict=True))
        params = list(model.parameters())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).double())
    return float((grads[0] - grads[1]).norm() / grads[1].norm())


def test_float32_mdeq_cell_gradient_is_exact_with_float64_states():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReconstructionWarning)
        assert mdeq_gradient_error("float64") < 1e-5
    # states in float32: a rebuilt state's rounding passes through f and every digit is lost
    with pytest.warns(ReconstructionWarning):
        assert mdeq_gradient_error("native") > 1e-2


def test_float64_states_give_the_gradient_of_the_float32_cell_at_each_point():
    torch.manual_seed(8)
    cell = eq.cells.TanhCell(8)
    x = torch.randn(3, 8, requires_grad=True)
    start = torch.randn(3, 8, requires_grad=True)
    sol = eq.solve(
        lambda z: cell(z, x),
        start,
        backward=Reversible(0.8),
        tol=0.0,
        max_iter=21,
        patience=None,
        on_failure="ignore",
    )
    assert sol.z.dtype == sol.fz.dtype == sol.rel_residual.dtype == torch.float32
    params = [start, x, *cell.parameters()]
    got = torch.autograd.grad(sol.z.sum(), params)
    assert all(g.dtype == torch.float32 for g in got)

    def f(z):  # the cell at the float64 state rounded to float32
        return cell(z.float(), x).double()

    ref = unrolled(f, start.double(), 0.8, 0.0, 21)
    assert torch.equal(sol.z, ref.float())
    want = torch.autograd.grad(ref.float().sum(), params)
    assert_close(got, want, atol=1e-6)


class Float32Cell(nn.Module):
    """A tanh cell that returns its state's dtype under autocast (as the MDEQ's GroupNorm does)."""

    def __init__(self, d):
        super().__init__()
        self.inner = eq.cells.TanhCell(d)

    def forward(self, z, x):
        return self.inner(z, x).to(z.dtype)


def test_bf16_autocast_reaches_the_rebuilt_cell_calls_but_not_the_state_arithmetic():
    torch.manual_seed(5)
    cell = Float32Cell(16)
    deq = eq.DEQ(cell, backward="reversible", tol=1e-3, max_iter=21, on_failure="ignore")
    x = torch.randn(4, 16)
    with warnings.catch_warnings():
        # a rebuild evaluating the cell in float32 would miss the bf16 forward by 1e-2
        warnings.simplefilter("error", ReconstructionWarning)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = deq(x)
        assert out.dtype == torch.float32
        out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())


def test_without_grad_the_same_iteration_runs_and_reports_like_every_solve():
    w, x, scale = tanh_problem()
    inject = (x * scale).detach()

    def f(z):
        return torch.tanh(z @ w + inject)

    with torch.no_grad():
        sol = eq.solve(
            f, torch.zeros(5, 6, dtype=F64), backward="reversible", tol=1e-10, max_iter=301
        )
    assert sol.status == eq.Status.CONVERGED and sol.nfe % 2 == 1
    assert float(sol.rel_residual.max()) <= 1e-10
    assert torch.allclose(sol.fz, f(sol.z))
    with pytest.warns(eq.ConvergenceWarning, match="reversible stopped at the evaluation limit"):
        eq.solve(f, torch.zeros(5, 6, dtype=F64), backward="reversible", tol=1e-12, max_iter=5)


@pytest.mark.parametrize("b", [0, 1, 2, -0.5, 2.5, True, "0.5", float("nan")])
def test_bad_relaxation_is_one_clear_line(b):
    with pytest.raises(ValueError, match=r"^Reversible b must lie in \(0, 2\) and differ from 1"):
        Reversible(b)


def test_bad_precision_is_one_clear_line():
    with pytest.raises(ValueError, match="^Reversible precision must be 'float64' or 'native'"):
        Reversible(precision="float32")


def test_bad_checkpoint_interval_is_one_clear_line():
    with pytest.raises(ValueError, match="checkpoint_every must be 'auto', None or an integer"):
        Reversible(checkpoint_every="often")
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        Reversible(checkpoint_every=0)


def test_a_state_that_becomes_non_finite_in_the_rebuild_is_one_clear_line():
    torch.manual_seed(6)
    cell = eq.cells.TanhCell(16)
    x = torch.randn(4, 16)
    sol = eq.solve(
        lambda z: cell(z, x),
        torch.zeros(4, 16),
        backward=Reversible(0.8, checkpoint_every=None),
        tol=0.0,
        max_iter=201,
        patience=None,
        on_failure="ignore",
    )
    with pytest.raises(NonFiniteError, match="rebuilt state became non-finite by step 0 of 100"):
        sol.z.sum().backward()


def test_a_cell_that_changes_structure_is_one_clear_line():
    calls = {"n": 0, "grow": 4}
    w = torch.tensor(0.5, requires_grad=True)

    def f(z):
        calls["n"] += 1
        out = torch.tanh(w * z + 1)
        return torch.cat([out, out[:, :1]], 1) if calls["n"] >= calls["grow"] else out

    with pytest.raises(StateMismatchError, match="in the reversible forward"):
        eq.solve(f, torch.zeros(2, 3), backward="reversible", tol=0.0, max_iter=11)
    calls.update(n=0, grow=12)
    sol = eq.solve(
        f, torch.zeros(2, 3), backward="reversible", tol=0.0, max_iter=11, on_failure="ignore"
    )
    with pytest.raises(StateMismatchError, match="in the reversible backward"):
        sol.z.sum().backward()


def test_refusals_are_one_clear_line():
    sol = eq.solve(
        lambda z: torch.tanh(0.5 * z + a),
        torch.zeros(2, 3),
        backward="reversible",
        tol=1e-6,
        max_iter=41,
        on_failure="ignore",
    )
    with pytest.raises(UnsupportedError, match="create_graph=True cannot pass"):
        torch.autograd.grad(sol.z.sum(), a, create_graph=True)
    with pytest.raises(UnsupportedError, match="runs its own forward iteration"):
        Reversible().attach(torch.tanh, torch.zeros(2, 3), None, print)


def test_the_name_works_wherever_a_backward_is_named():
    assert isinstance(eq.make_backward("reversible"), Reversible)
    assert "reversible" in eq.BACKWARDS
    assert Config().override(["deq.backward=reversible"]).deq.backward == "reversible"
    deq = eq.DEQ(eq.cells.TanhCell(4), backward="reversible")
    assert "Reversible(b=0.5" in repr(deq)


def test_the_config_keys_build_the_reversible_backward_and_are_refused_with_another():
    config = Config().override(
        ["deq.backward=reversible", "deq.reversible_b=0.8", "deq.reversible_checkpoint=4"]
    )
    backward = build_model(config, (1, 8, 8), 10).deq.backward
    assert isinstance(backward, Reversible)
    assert (backward.b, backward.checkpoint_every, backward.precision) == (0.8, 4, "float64")
    with pytest.raises(
        ConfigError, match=r"^deq.reversible_b=0.8 only applies with deq.backward=reversible"
    ):
        Config().override(["deq.backward=implicit", "deq.reversible_b=0.8"])
    with pytest.raises(ConfigError, match=r"^deq.reversible_b=1.0 must lie in \(0, 2\)"):
        Config().override(["deq.backward=reversible", "deq.reversible_b=1"])
