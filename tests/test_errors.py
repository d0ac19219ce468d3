"""Bad input gets a clear error that names what was wrong and what is valid."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell


class Cell(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z, x):
        return self.fn(z, x)


def test_nonfinite_input_names_the_input_and_samples():
    x = torch.randn(4, 8)
    x[2, 3] = float("nan")
    with pytest.raises(eq.NonFiniteError, match=r"DEQ input.*NaN in samples \[2\]"):
        eq.DEQ(TanhCell(8))(x)


def test_nonfinite_initial_state():
    with pytest.raises(eq.NonFiniteError, match="z0"):
        eq.solve(torch.cos, torch.tensor([[0.0], [float("inf")]]))


def test_nonfinite_cell_output_names_part_samples_and_iteration():
    def bad(z, x):
        out = 0.5 * z + x
        if (z != 0).any():  # fine at first, NaN from the second evaluation on, sample 1 only
            out = out.clone()
            out[1] = float("nan")
        return out

    with pytest.raises(
        eq.NonFiniteError, match=r"output of the cell holds NaN in samples \[1\] at evaluation 2"
    ):
        eq.DEQ(Cell(bad), "picard")(torch.ones(3, 2))

    def bad_tuple(z, x):
        return z[0] * 0.5, z[1] * float("inf")

    with pytest.raises(eq.NonFiniteError, match=r"inf in part 1, samples \[0, 1\]"):
        eq.solve(lambda z: bad_tuple(z, None), (torch.ones(2, 3), torch.ones(2, 4)))


def test_nonfinite_gradient_is_reported():
    x = torch.randn(2, 8, requires_grad=True)
    z = eq.DEQ(TanhCell(8))(x)
    with pytest.raises(eq.NonFiniteError, match="gradient arriving at the DEQ output"):
        (z * float("nan")).sum().backward()


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda z, x: z[:, :3], r"expected tensor of shape \(2, 4\).*got tensor of shape \(2, 3\)"),
        (lambda z, x: z.double(), r"float32.*got.*float64"),
        (lambda z, x: (z, z), r"expected tensor of shape \(2, 4\).*got tuple of 2"),
        (lambda z, x: None, r"same structure.*NoneType"),
    ],
    ids=["shape", "dtype", "structure", "none"],
)
def test_cell_output_mismatch_names_both_shapes(fn, match):
    with pytest.raises(eq.StateMismatchError, match=match):
        eq.DEQ(Cell(fn))(torch.ones(2, 4))


def test_tuple_state_part_mismatch():
    def fn(z, x):
        return z[0], z[1][:, :1]

    with pytest.raises(eq.StateMismatchError, match=r"tuple of 2"):
        eq.solve(lambda z: fn(z, None), (torch.ones(2, 3), torch.ones(2, 4)))


def test_unknown_solver_and_backward_names_list_the_choices():
    with pytest.raises(
        ValueError, match="solver='andersen' is not valid; choose one of picard, anderson, broyden"
    ):
        eq.DEQ(TanhCell(4), "andersen")
    with pytest.raises(
        ValueError, match="backward='implict'.*implicit, phantom, onestep, unrolled"
    ):
        eq.DEQ(TanhCell(4), backward="implict")
    with pytest.raises(ValueError, match="choose one of"):
        eq.solve(torch.cos, torch.zeros(1, 1), "secant")
    with pytest.raises(TypeError, match="backward must be a name"):
        eq.DEQ(TanhCell(4), backward=3)


def test_unknown_keywords_list_the_valid_ones():
    with pytest.raises(
        TypeError, match=r"unknown keyword 'max_iters'.*valid keywords are.*max_iter"
    ):
        eq.solve(torch.cos, torch.zeros(1, 1), max_iters=5)
    with pytest.raises(TypeError, match=r"'memory'.*valid keywords are.*beta.*m"):
        eq.DEQ(TanhCell(4), "anderson", memory=3)
    with pytest.raises(TypeError, match=r"'m'"):
        eq.DEQ(TanhCell(4), eq.Anderson(), m=3)
    with pytest.raises(TypeError, match=r"unknown keyword 'tolerance'"):
        eq.Implicit(tolerance=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tol=-1e-3), "tol must be a number >= 0"),
        (dict(max_iter=-5), "max_iter must be an integer >= 1"),
        (dict(max_iter=0), "max_iter must be an integer >= 1"),
        (dict(max_iter=2.5), "max_iter must be an integer"),
        (dict(stop_mode="relative"), "stop_mode='relative' is not valid; choose one of rel, abs"),
        (dict(on_failure="explode"), "choose one of warn, raise, ignore"),
        (dict(patience=0), "patience must be an integer >= 1"),
        (dict(eval_max_iter=-1), "max_iter must be an integer >= 1"),
        (dict(eval_tol=float("nan")), "tol must be a number >= 0"),
    ],
)
def test_bad_settings_fail_immediately(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eq.DEQ(TanhCell(4), **kwargs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: eq.Anderson(m=0), "Anderson m must be an integer >= 1"),
        (lambda: eq.Anderson(beta=1.5), r"Anderson beta must lie in \(0, 1\]"),
        (lambda: eq.Anderson(reg=-1.0), "Anderson reg must be a number >= 0"),
        (lambda: eq.Picard(damping=0.0), r"Picard damping must lie in \(0, 1\]"),
        (lambda: eq.Picard(damping="half"), r"Picard damping must lie in \(0, 1\], got 'half'"),
        (lambda: eq.Anderson(beta=float("nan")), r"Anderson beta must lie in \(0, 1\]"),
        (lambda: eq.Broyden(memory=0), "Broyden memory must be an integer >= 1"),
        (lambda: eq.Phantom(steps=0), "Phantom steps must be an integer >= 1"),
        (lambda: eq.Phantom(tau=2.0), r"Phantom tau must lie in \(0, 1\]"),
        (lambda: eq.Implicit(tol=-1.0), "tol must be a number >= 0"),
        (lambda: eq.Implicit(stop_mode="x"), "choose one of rel, abs"),
    ],
)
def test_bad_hyperparameters_fail_immediately(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_states():
    with pytest.raises(TypeError, match="states must be floating"):
        eq.solve(lambda z: z, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        eq.solve(lambda z: z, (torch.zeros(2, 3), torch.zeros(3, 3)))
    with pytest.raises(TypeError, match="must be a tensor or a non-empty tuple/list"):
        eq.solve(lambda z: z, [])
    with pytest.raises(TypeError, match="cell must be an nn.Module"):
        eq.DEQ(lambda z, x: z)
    with pytest.raises(TypeError, match="pass z0 or define init_state"):
        eq.DEQ(Cell(lambda z, x: z))((torch.zeros(2, 3),))
