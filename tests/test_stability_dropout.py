"""Variational dropout: one mask per forward solve, shared by every iteration."""

import pytest
import torch
from torch import nn

import equilibria as eq


class DropCell(nn.Module):
    """f(z, x) = tanh(W drop(z) + x); records the mask each application used."""

    def __init__(self, dropout, d=8):
        super().__init__()
        self.linear = nn.Linear(d, d)
        self.drop = dropout
        self.seen = []
        with torch.no_grad():
            self.linear.weight.mul_(0.3)

    def forward(self, z, x):
        self.seen.append(self.drop(torch.ones_like(z)).detach())
        return torch.tanh(self.linear(self.drop(z)) + x)


def test_masks_are_identical_across_iterations_and_differ_across_forwards():
    cell = DropCell(eq.VariationalDropout1d(0.5))
    deq = eq.DEQ(cell, "picard", tol=1e-6, max_iter=50)
    x = torch.randn(16, 8)
    deq(x)
    first = cell.seen
    assert len(first) > 5
    assert all(torch.equal(m, first[0]) for m in first)
    assert set(first[0].unique().tolist()) == {0.0, 2.0}  # kept entries scaled by 1 / (1 - p)
    cell.seen = []
    deq(x)
    assert all(torch.equal(m, cell.seen[0]) for m in cell.seen)
    assert not torch.equal(cell.seen[0], first[0])


def test_the_solve_converges_with_dropout_on():
    """A fixed mask keeps f fixed, so the solve reaches a tight tolerance in training mode."""
    cell = DropCell(eq.VariationalDropout1d(0.3))
    deq = eq.DEQ(cell, "anderson", tol=1e-7, max_iter=60, on_failure="raise")
    z = deq(torch.randn(4, 8))
    assert deq.stats.converged.all()
    z.sum().backward()


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(3, 5)
    drop = eq.VariationalDropout1d(0.5).eval()
    assert drop(x) is x
    assert eq.VariationalDropout1d(0.0)(x) is x
    assert torch.equal(eq.VariationalDropout1d(1.0)(x), torch.zeros_like(x))


def test_2d_masks_are_per_channel_and_1d_shares_along_the_length():
    drop = eq.VariationalDropout2d(0.5)
    y = drop(torch.ones(4, 6, 3, 5))
    per_channel = y[:, :, :1, :1]
    assert torch.equal(y, per_channel.expand_as(y))
    drop1 = eq.VariationalDropout1d(0.5)
    y = drop1(torch.ones(4, 6, 7))
    assert torch.equal(y, y[:, :, :1].expand_as(y))


def test_outside_a_solve_each_call_draws_a_new_mask():
    drop = eq.VariationalDropout2d(0.5)
    x = torch.ones(8, 16, 2, 2)
    assert not torch.equal(drop(x), drop(x))
    with eq.stability.masks_held(drop):
        a, b = drop(x), drop(x)
        with eq.stability.masks_held(drop):  # nested blocks keep the outer mask
            c = drop(x)
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mask_follows_the_input_dtype_and_device(dtype):
    drop = eq.VariationalDropout2d(0.25)
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    with eq.stability.masks_held(drop):
        y = drop(x)
        assert drop._mask.dtype == dtype and drop._mask.device == x.device
    assert y.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mask_on_cuda():
    cell = DropCell(eq.VariationalDropout1d(0.2)).cuda()
    z = eq.DEQ(cell, tol=1e-5)(torch.randn(4, 8, device="cuda"))
    assert z.is_cuda and cell.seen[0].is_cuda


def test_bad_settings_and_shapes_are_reported():
    for p in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"VariationalDropout2d p must lie in \[0, 1\]"):
            eq.VariationalDropout2d(p)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, channels, height"):
        eq.VariationalDropout2d(0.1)(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"VariationalDropout1d expects.*got shape \(2, 3, 4, 5\)"):
        eq.VariationalDropout1d(0.1)(torch.ones(2, 3, 4, 5))
    drop = eq.VariationalDropout1d(0.1)
    with eq.stability.masks_held(drop), pytest.raises(ValueError, match="different shapes"):
        drop(torch.ones(2, 3))
        drop(torch.ones(4, 3))
