"""Training helpers: fixed-point correction, warm starts, unrolled pretraining, cap jitter."""

import pytest
import torch

import equilibria as eq
from equilibria.cells import TanhCell

FIXED = dict(tol=0.0, patience=None, on_failure="ignore")  # run exactly max_iter evaluations


def cell_and_input(d=5, batch=3, seed=0):
    torch.manual_seed(seed)
    return TanhCell(d, contraction=0.8).double(), torch.randn(batch, d, dtype=torch.float64)


def picard_iterates(cell, x, n):
    """z_0 = 0, z_{k+1} = f(z_k): the states plain iteration visits."""
    z = [torch.zeros_like(x)]
    for _ in range(n):
        z.append(cell(z[-1], x).detach())
    return z


# ---------------------------------------------------------------- fixed-point correction


def test_correction_states_are_evenly_spaced_along_the_solve_with_decaying_weights():
    cell, x = cell_and_input()
    correction = eq.FixedPointCorrection(states=3, decay=0.5)
    deq = eq.DEQ(cell, "picard", max_iter=9, correction=correction, **FIXED)
    out = deq(x)
    states = deq.stats.correction.states
    assert len(states) == 3 and states[-1] is out
    assert deq.stats.correction.weights == [0.25, 0.5, 1.0]
    z = picard_iterates(cell, x, 9)
    # 9 evaluations at z_0..z_8; the intermediate states are f(z_2) = z_3 and f(z_5) = z_6
    torch.testing.assert_close(states[0], z[3])
    torch.testing.assert_close(states[1], z[6])


def test_correction_loss_gradient_is_the_weighted_sum_of_one_step_gradients():
    cell, x = cell_and_input()
    deq = eq.DEQ(
        cell,
        "picard",
        max_iter=9,
        backward="onestep",
        correction=eq.FixedPointCorrection(states=3, decay=0.5),
        **FIXED,
    )
    deq(x)
    deq.stats.correction.loss(lambda s: s.pow(2).sum()).backward()
    got = cell.linear.weight.grad.clone()
    cell.zero_grad()
    z = picard_iterates(cell, x, 9)
    best = deq.stats.forward.z
    reference = sum(
        w * cell(s, x).pow(2).sum()
        for w, s in zip((0.25, 0.5, 1.0), (z[2], z[5], best), strict=True)
    )
    reference.backward()
    torch.testing.assert_close(got, cell.linear.weight.grad)


def test_phantom_correction_and_training_only():
    cell, x = cell_and_input()
    correction = eq.FixedPointCorrection(states=4, backward=eq.Phantom(steps=2, tau=0.5))
    deq = eq.DEQ(cell, tol=1e-8, correction=correction)
    deq(x)
    assert len(deq.stats.correction.states) == 4
    assert all(s.requires_grad for s in deq.stats.correction.states)
    with torch.no_grad():
        deq(x)
    assert deq.stats.correction is None
    deq.eval()
    deq(x)
    assert deq.stats.correction is None


def test_correction_settings_are_checked():
    with pytest.raises(ValueError, match="FixedPointCorrection states must be an integer >= 2"):
        eq.FixedPointCorrection(states=1)
    for decay in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"FixedPointCorrection decay must lie in \(0, 1\]"):
            eq.FixedPointCorrection(decay=decay)
    with pytest.raises(ValueError, match="must be 'onestep' or 'phantom'.*not fixed points"):
        eq.FixedPointCorrection(backward=eq.Implicit())
    with pytest.raises(ValueError, match="backward='unrolled' is not valid; choose one of onestep"):
        eq.FixedPointCorrection(backward="unrolled")
    with pytest.raises(TypeError, match="correction must be None or an eq.FixedPointCorrection"):
        eq.DEQ(TanhCell(3), correction=3)


# ---------------------------------------------------------------- warm starts


def test_previous_fixed_point_as_z0_saves_evaluations():
    cell, x = cell_and_input()
    deq = eq.DEQ(cell, "picard", tol=1e-8, max_iter=200)
    z = deq(x)
    cold = deq.stats.forward_nfe
    deq(x + 1e-4, z0=z.detach())
    assert deq.stats.forward_nfe < cold / 2


def test_cache_returns_stored_fixed_points_by_sample_index():
    cell, x = cell_and_input(batch=4)
    deq = eq.DEQ(cell, "picard", tol=1e-8, max_iter=200)
    cache = eq.FixedPointCache(capacity=100)
    index = torch.tensor([10, 11, 12, 13])
    z0 = cache.initial(index, deq.initial_state(x))
    assert torch.equal(z0, torch.zeros_like(x)) and cache.misses == 4
    z = deq(x, z0=z0)
    cold = deq.stats.forward_nfe
    cache.store(index, z)
    # revisit in another order, mixed with unseen samples
    order = [2, 0, 3]
    batch = torch.cat([x[order], torch.randn(1, 5, dtype=torch.float64)])
    z0 = cache.initial(index[order].tolist() + [99], deq.initial_state(batch))
    torch.testing.assert_close(z0[:3], z[order].detach())
    assert torch.equal(z0[3], torch.zeros(5, dtype=torch.float64)) and cache.hits == 3
    deq(batch[:3], z0=z0[:3])
    assert deq.stats.forward_nfe < cold / 2


def test_cache_is_lru_bounded_and_handles_tuple_states():
    cache = eq.FixedPointCache(capacity=2)
    state = (torch.arange(6.0).reshape(3, 2), torch.arange(9.0).reshape(3, 3, 1))
    cache.store([0, 1, 2], state)
    assert len(cache) == 2 and 0 not in cache and 2 in cache
    default = (torch.zeros(2, 2), torch.zeros(2, 3, 1))
    got = cache.initial([2, 0], default)
    assert isinstance(got, tuple)
    torch.testing.assert_close(got[0][0], state[0][2])
    torch.testing.assert_close(got[1][0], state[1][2])
    assert torch.equal(got[0][1], torch.zeros(2))


def test_cache_errors_are_clear():
    cache = eq.FixedPointCache()
    with pytest.raises(ValueError, match="got 2 indices for a batch of 3 samples"):
        cache.store([1, 2], torch.ones(3, 2))
    with pytest.raises(TypeError, match="1-d integer tensor"):
        cache.store(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3, 2))
    cache.store([1], torch.ones(1, 2))
    with pytest.raises(ValueError, match="sample 1 has 2 entries but this batch's state has 3"):
        cache.initial([1], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="FixedPointCache capacity must be an integer >= 1"):
        eq.FixedPointCache(capacity=0)


# ---------------------------------------------------------------- unrolled pretraining


def test_pretraining_runs_the_unrolled_network_then_switches_to_the_solve():
    cell, x = cell_and_input()
    deq = eq.DEQ(cell, tol=1e-8, pretrain=eq.Pretrain(depth=3, steps=2))
    assert deq.pretraining
    out = deq(x)
    assert deq.stats.pretraining and deq.stats.forward_nfe == 3
    # the output and gradient are those of the explicit 3-layer weight-tied network
    reference = cell(cell(cell(torch.zeros_like(x), x), x), x)
    torch.testing.assert_close(out, reference)
    out.pow(2).sum().backward()
    got = cell.linear.weight.grad.clone()
    cell.zero_grad()
    reference.pow(2).sum().backward()
    torch.testing.assert_close(got, cell.linear.weight.grad)
    torch.testing.assert_close(
        deq.stats.abs_residual, (reference - cell(cell(torch.zeros_like(x), x), x)).norm(dim=1)
    )
    with torch.no_grad():  # neither no-grad calls nor eval calls use up pretraining steps
        deq(x)
    deq.eval()
    deq(x)
    assert deq.stats.pretraining and int(deq.pretrain_remaining) == 1
    deq.train()
    deq(x)
    assert not deq.pretraining
    deq(x)
    assert not deq.stats.pretraining and deq.stats.forward_nfe > 3
    torch.testing.assert_close(deq(x), cell(deq(x), x))


def test_pretraining_can_end_early_and_resumes_from_a_checkpoint():
    cell, x = cell_and_input()
    deq = eq.DEQ(cell, pretrain=eq.Pretrain(depth=2, steps=100))
    deq(x)
    saved = {k: v.clone() for k, v in deq.state_dict().items()}
    assert int(saved["pretrain_remaining"]) == 99
    deq.end_pretraining()
    deq(x)
    assert not deq.stats.pretraining
    deq.load_state_dict(saved)
    assert deq.pretraining and int(deq.pretrain_remaining) == 99


def test_pretraining_settings_are_checked():
    with pytest.raises(ValueError, match="Pretrain depth must be an integer >= 1"):
        eq.Pretrain(depth=0, steps=3)
    with pytest.raises(ValueError, match="Pretrain steps must be an integer >= 0"):
        eq.Pretrain(depth=2, steps=-1)
    with pytest.raises(TypeError, match=r"pretrain must be None or an eq.Pretrain\(depth, steps"):
        eq.DEQ(TanhCell(3), pretrain=5)


# ---------------------------------------------------------------- iteration-cap jitter


def test_jitter_draws_training_caps_below_the_configured_one():
    cell, x = cell_and_input()
    deq = eq.DEQ(cell, "picard", max_iter=10, iteration_jitter=4, eval_max_iter=10, **FIXED)
    caps = set()
    for _ in range(60):
        deq(x)
        assert deq.stats.forward_nfe == deq.stats.max_iter
        caps.add(deq.stats.max_iter)
    assert caps == {6, 7, 8, 9, 10}
    deq(x, max_iter=3)  # a cap given for the call is used as is
    assert deq.stats.forward_nfe == 3
    deq.eval()
    assert {deq(x) is not None and deq.stats.forward_nfe for _ in range(5)} == {10}


def test_jitter_leaves_the_backward_cap_alone():
    cell, x = cell_and_input()
    deq = eq.DEQ(cell, "picard", max_iter=10, iteration_jitter=8, **FIXED)
    for _ in range(5):
        deq(x).sum().backward()
        assert deq.stats.backward_nfe == 10


def test_jitter_settings_are_checked():
    with pytest.raises(ValueError, match="iteration_jitter must be an integer >= 0"):
        eq.DEQ(TanhCell(3), iteration_jitter=-1)
    with pytest.raises(ValueError, match=r"iteration_jitter must be smaller than max_iter \(5\)"):
        eq.DEQ(TanhCell(3), max_iter=5, iteration_jitter=5)


def test_shared_draws_make_penalty_and_cap_decisions_alike_across_processes():
    def decisions(global_seed: int, shared_seed: int | None) -> list:
        torch.manual_seed(global_seed)  # each process's own generator differs (dropout, data)
        penalty = eq.JacobianPenalty(gamma=1.0, p=0.5)
        found = []
        for step in range(20):
            if shared_seed is None:
                found.append((penalty.draw(), eq.stability.jittered_cap(10, 6)))
                continue
            with eq.stability.shared_draws(shared_seed + step):
                found.append((penalty.draw(), eq.stability.jittered_cap(10, 6)))
        return found

    assert decisions(1, shared_seed=7) == decisions(2, shared_seed=7)
    assert decisions(1, shared_seed=None) != decisions(2, shared_seed=None)
    assert decisions(1, shared_seed=7) != decisions(1, shared_seed=8)
    caps = [cap for _, cap in decisions(3, shared_seed=0)]
    assert min(caps) >= 4 and max(caps) <= 10


def test_shared_draws_leave_the_global_generator_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with eq.stability.shared_draws(5):
        eq.JacobianPenalty(p=0.5).draw()
        eq.stability.jittered_cap(10, 3)
    torch.testing.assert_close(torch.rand(3), expected)
