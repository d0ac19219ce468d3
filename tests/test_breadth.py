"""Test-time compute in breadth: many starts per sample in one batched solve, then selection by
residual or by majority vote."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell

DOCS = Path(__file__).resolve().parents[1] / "docs" / "library.md"


class Halving(nn.Module):
    """f(z, x) = z / 2 + x: the fixed point 2x, and after n Picard steps the residual is
    proportional to the start's distance from it."""

    def forward(self, z, x):
        return 0.5 * z + x


class TwoAttractors(nn.Module):
    """f(z, x) = tanh(4 z + x / 10) per feature: an attractor near +1 and one near -1."""

    def forward(self, z, x):
        return torch.tanh(4 * z + 0.1 * x)


class PairCell(nn.Module):
    """A state of two parts with different shapes, an input of two parts."""

    def forward(self, z, x):
        a, b = z
        xa, xb = x
        return type(z)((0.5 * a + xa, 0.5 * b + xb + 0.1 * a.sum(1)[:, None, None]))

    def init_state(self, x):
        return type(x)(torch.zeros_like(part) for part in x)


def at_distances(distances):
    """A start callable placing start k of sample i at 2x + distances[k - 1][i] (Halving)."""
    table = torch.tensor(distances, dtype=torch.float32)
    return lambda x, k: 2 * x + table[k - 1][:, None]


def halving(**settings):
    options = {"tol": 1e-3, "max_iter": 4, "stop_mode": "abs", "on_failure": "ignore"}
    return eq.DEQ(Halving(), "picard", **{**options, **settings})


def selected(states, best):
    return states[best, torch.arange(best.shape[0])]


def test_one_start_is_the_plain_call():
    deq = eq.DEQ(TanhCell(8, contraction=0.95), tol=1e-6, max_iter=30)
    x = torch.randn(5, 8)
    with torch.no_grad():
        plain, nfe = deq(x), deq.stats.forward_nfe
        result = eq.solve_breadth(deq, x, starts=1)
    assert torch.equal(result.z, plain) and result.nfe == nfe
    assert torch.equal(result.states[0], plain) and result.best.tolist() == [0] * 5
    assert result.residual.shape == result.converged.shape == (1, 5)


def test_selects_the_lowest_residual_start_per_sample():
    deq = halving()
    x = torch.ones(3, 1)  # start 0 (zeros) lies at distance 2 from the fixed point
    start = at_distances([[4.0, 1.0, 3.0], [0.001, 5.0, 4.0], [3.0, 6.0, 5.0]])
    with torch.no_grad():
        result = eq.solve_breadth(deq, x, starts=4, start=start)
    assert result.states.shape == (4, 3, 1) and result.residual.shape == (4, 3)
    assert result.best.tolist() == [2, 1, 0]
    assert torch.equal(result.best, result.residual.argmin(dim=0))
    assert torch.equal(result.z, selected(result.states, result.best))
    assert result.converged.any() and not result.converged.all()
    assert result.selected_converged.tolist() == [True, False, False]
    assert torch.equal(result.selected_residual, result.residual.min(dim=0).values)
    assert result.nfe == deq.stats.forward_nfe and deq.stats.forward.z.shape == (12, 1)


def test_random_starts_share_one_batched_call_laid_out_start_major():
    deq = eq.DEQ(Halving(), "picard", tol=1e-7, max_iter=100)
    x = torch.randn(4, 3)
    with torch.no_grad():
        result = eq.solve_breadth(deq, x, starts=5, scale=3.0)
    assert result.converged.all()
    for k in range(5):  # row k * batch + i saw sample i's input
        torch.testing.assert_close(result.states[k], 2 * x, atol=1e-5, rtol=0)


def reference_vote(answers, residual):
    """The rule written out: most starts, then the lowest residual among each answer's starts."""
    chosen = []
    for i in range(residual.shape[1]):
        groups = {}
        for k in range(residual.shape[0]):
            groups.setdefault(tuple(answers[k, i].flatten().tolist()), []).append(k)
        key = min(groups, key=lambda a: (-len(groups[a]), min(residual[k, i] for k in groups[a])))
        chosen.append(key)
    return torch.tensor(chosen).reshape(residual.shape[1], *answers.shape[2:])


def test_vote_takes_the_majority_and_breaks_ties_by_residual():
    deq = halving()
    x = torch.ones(2, 1)  # start 0 at distance 2
    start = at_distances([[5.0, 4.0], [6.0, 0.5], [0.1, 3.0], [7.0, 0.2]])
    table = torch.tensor([[7, 1], [3, 2], [3, 2], [7, 1], [3, 9]])  # answers (start, sample)
    answer = lambda states: table.reshape(-1)  # noqa: E731 (row k * batch + i)
    with torch.no_grad():
        result = eq.solve_breadth(deq, x, starts=5, start=start)
        voted = eq.solve_breadth(deq, x, starts=5, start=start, select="vote", answer=answer)
    # sample 0: answer 3 (3 starts) beats start 3's lower residual; sample 1: 1 and 2 tie with
    # 2 starts each, and 2's best start (distance 0.5) beats 1's (distance 2)
    assert result.vote(answer).tolist() == [3, 2]
    assert result.best.tolist() == [3, 4] and result.answer is None
    assert voted.answer.tolist() == [3, 2] and voted.best.tolist() == [1, 2]
    assert torch.equal(voted.z, selected(voted.states, voted.best))
    assert result.answers(answer).shape == (5, 2)


def test_vote_on_a_cell_with_two_attractors():
    deq = eq.DEQ(TwoAttractors(), "picard", tol=1e-5, max_iter=40, on_failure="ignore")
    x = torch.randn(6, 3)
    signs = lambda z: z.gt(0).long()  # noqa: E731
    with torch.no_grad():
        result = eq.solve_breadth(deq, x, starts=7, scale=0.5)
    answers = result.answers(signs)
    assert answers.shape == (7, 6, 3)
    assert (answers != answers[:1]).any(), "the starts should reach different attractors"
    assert torch.equal(result.vote(signs), reference_vote(answers, result.residual))
    assert result.converged.all()


@pytest.mark.parametrize("container", [tuple, list])
def test_tuple_and_list_states_and_inputs(container):
    deq = eq.DEQ(PairCell(), "picard", tol=1e-3, max_iter=5, stop_mode="abs", on_failure="ignore")
    x = container((torch.randn(3, 4), torch.randn(3, 2, 2)))
    with torch.no_grad():
        plain, nfe = deq(x), deq.stats.forward_nfe
        single = eq.solve_breadth(deq, x, starts=1)
        result = eq.solve_breadth(deq, x, starts=4, scale=2.0)
    assert type(single.z) is container and single.nfe == nfe
    assert all(torch.equal(a, b) for a, b in zip(single.z, plain, strict=True))
    assert type(result.z) is type(result.states) is container
    assert [tuple(p.shape) for p in result.states] == [(4, 3, 4), (4, 3, 2, 2)]
    assert torch.equal(result.best, result.residual.argmin(dim=0))
    for part, states in zip(result.z, result.states, strict=True):
        assert torch.equal(part, selected(states, result.best))


def test_gradients_flow_through_the_selected_state():
    torch.manual_seed(0)
    deq = eq.DEQ(TanhCell(6, contraction=0.5), tol=1e-4, max_iter=60)
    x = torch.randn(4, 6, requires_grad=True)
    deq(x).pow(2).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    eq.solve_breadth(deq, x, starts=1).z.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, expected)

    x.grad = None
    deq.zero_grad()
    result = eq.solve_breadth(deq, x, starts=3, scale=0.5)
    assert result.z.requires_grad
    result.z.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in deq.parameters())


def test_a_generator_makes_the_starts_reproducible():
    deq = halving(max_iter=2)
    x = torch.randn(3, 4)

    def run(seed):
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed)
            return eq.solve_breadth(deq, x, starts=4, generator=generator)

    state = torch.random.get_rng_state()
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(torch.random.get_rng_state(), state), "the global generator was used"
    assert torch.equal(first.states, again.states) and torch.equal(first.best, again.best)
    assert not torch.equal(first.states[1:], other.states[1:])
    assert torch.equal(first.states[0], other.states[0])  # start 0 is never random


def test_scale_zero_repeats_the_default_start():
    deq = halving(max_iter=2)
    with torch.no_grad():
        result = eq.solve_breadth(deq, torch.randn(2, 3), starts=3, scale=0.0)
    assert torch.equal(result.states[1], result.states[0])
    assert result.best.tolist() == [0, 0]  # ties go to start 0


def test_on_failure_judges_the_selected_starts_only():
    x = torch.ones(2, 1)
    near = at_distances([[0.001, 0.001], [5.0, 5.0]])  # start 1 converges, 0 and 2 do not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = eq.solve_breadth(halving(on_failure="raise"), x, starts=3, start=near)
    assert result.selected_converged.all() and not result.converged.all()
    far = at_distances([[3.0, 3.0]])
    with pytest.raises(eq.NotConvergedError, match=r"0/2 samples.*selected start \(of 2\)"):
        eq.solve_breadth(halving(), x, starts=2, start=far, on_failure="raise")
    with pytest.warns(eq.ConvergenceWarning, match="breadth solve"):
        eq.solve_breadth(halving(on_failure="warn"), x, starts=2, start=far)


class FirstPart(nn.Module):
    """f(z, x) = z / 2 + x[0], with the state shaped like x[0]."""

    def forward(self, z, x):
        return 0.5 * z + x[0]

    def init_state(self, x):
        return torch.zeros_like(x[0])


def bad_calls():
    deq = halving()
    first_part = eq.DEQ(FirstPart())
    x = torch.ones(2, 1)
    return (
        [
            (dict(starts=0), ValueError, "starts must be an integer >= 1"),
            (dict(starts=2.0), ValueError, "starts must be an integer"),
            (dict(starts=True), ValueError, "starts must be an integer"),
            (dict(scale=-1.0), ValueError, "scale must be a number >= 0"),
            (dict(scale=float("inf")), ValueError, "scale must be finite"),
            (dict(select="best"), ValueError, "select='best' is not valid; choose one of residual"),
            (dict(select="vote"), ValueError, "select='vote' needs answer"),
            (dict(answer=lambda z: z.long()), ValueError, "answer= is used only with"),
            (dict(select="vote", answer=3), TypeError, "answer must be a callable"),
            (dict(generator=42), TypeError, "generator must be None or a torch.Generator"),
            (dict(start=5), TypeError, "start must be None or a callable"),
            (dict(on_failure="loud"), ValueError, "on_failure='loud' is not valid"),
            (dict(deq=TanhCell(1)), TypeError, "needs an eq.DEQ, got TanhCell"),
            (dict(start=lambda x, k: None), eq.StateMismatchError, r"start\(x, 1\) must have"),
            (dict(start=lambda x, k: (x, x)), eq.StateMismatchError, "got tuple of 2"),
            (dict(start=lambda x, k: x[:1]), eq.StateMismatchError, r"start\(x, 1\) must match"),
            (dict(select="vote", answer=lambda z: z), TypeError, "integer or bool tensor"),
            (dict(select="vote", answer=lambda z: z[:2].long()), ValueError, "leading size 4"),
            (dict(deq=first_part, x=(x, torch.ones(3, 1))), ValueError, r"must be the batch \(2\)"),
            (dict(start=lambda x, k: x.double()), eq.StateMismatchError, "float64"),
        ],
        deq,
        x,
    )


@pytest.mark.parametrize("index", range(len(bad_calls()[0])))
def test_bad_input_gets_one_clear_error(index):
    calls, deq, x = bad_calls()
    kwargs, error, message = calls[index]
    kwargs = {"deq": deq, "x": x, "starts": 2, **kwargs}
    with torch.no_grad(), pytest.raises(error, match=message):
        eq.solve_breadth(kwargs.pop("deq"), kwargs.pop("x"), **kwargs)


def test_the_documented_example_runs():
    text = DOCS.read_text()
    section = text[text.index("## Test-time compute: depth and breadth") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/library.md breadth example", "exec"), namespace)
    result = namespace["result"]
    assert result.z.shape == (32, 16) and result.states.shape == (8, 32, 16)
    assert torch.equal(result.best, result.residual.argmin(dim=0))
    assert namespace["labels"].shape == (32, 4)
