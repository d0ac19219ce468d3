"""The DEQ-Transformer and its explicit baseline: causality, memory, gradients, memory use."""

import pytest
import torch

import equilibria as eq
from benchmarks.meters import SavedTensorBytes
from equilibria.models import DEQTransformer, ExplicitTransformer
from equilibria.models.attention import CausalSelfAttention
from equilibria.models.transformer import extend_memory

TIGHT = dict(tol=1e-11, stop_mode="abs", max_iter=200)


def tiny_deq(norm="post", **options):
    torch.manual_seed(1)
    settings = dict(
        TIGHT, backward=eq.Implicit("anderson", tol=1e-12, stop_mode="abs", max_iter=200)
    )
    settings.update(options)
    return DEQTransformer(7, 8, 2, expansion=2, norm=norm, **settings).double()


def tokens(batch=2, length=6, seed=0):
    return torch.randint(7, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- causality


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_a_change_at_position_t_never_changes_earlier_outputs(norm):
    t = 3
    before = tokens()
    after = before.clone()
    after[:, t] = (after[:, t] + 1) % 7
    # a fixed number of plain iterations: each iterate is causal, so the outputs agree exactly
    picard = tiny_deq(norm, solver="picard", tol=0.0, max_iter=30).eval()
    a, b = picard(before), picard(after)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-13, rtol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-3
    # a converged Anderson solve (which mixes iterates over the whole sequence): up to its tol
    anderson = tiny_deq(norm).eval()
    a, b = anderson(before), anderson(after)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-8, rtol=0)
    explicit = ExplicitTransformer(7, 8, 2, layers=3, expansion=2, norm=norm).double()
    a, b = explicit(before), explicit(after)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-13, rtol=0)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-3


def test_attention_scores_depend_on_relative_positions_only():
    torch.manual_seed(0)
    attention = CausalSelfAttention(8, 2).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    memory = torch.randn(1, 3, 8, dtype=torch.float64)
    # the same keys seen from a segment after a memory: the same outputs as one sequence
    joined = attention(torch.cat((memory, x), dim=1))
    torch.testing.assert_close(attention(x, memory), joined[:, 3:])


# ---------------------------------------------------------------- memory of past equilibria


def test_segments_with_memory_match_the_whole_sequence():
    model = tiny_deq().eval()
    text = tokens(length=9)
    whole = model.run(text)
    first = model.run(text[:, :4])
    second = model.run(text[:, 4:], memory=first.states)
    torch.testing.assert_close(second.logits, whole.logits[:, 4:], atol=1e-8, rtol=0)
    torch.testing.assert_close(first.logits, whole.logits[:, :4], atol=1e-8, rtol=0)


def test_one_position_at_a_time_with_warm_starts_matches_the_whole_sequence():
    model = tiny_deq().eval()
    text = tokens(batch=1, length=7)
    whole = model(text)
    memory, z, logits, nfe = None, None, [], []
    for t in range(text.shape[1]):
        out = model.run(text[:, t : t + 1], memory=memory, z0=z)
        memory, z = extend_memory(memory, out.states, 100), out.z
        logits.append(out.logits)
        nfe.append(model.stats.forward_nfe)
    torch.testing.assert_close(torch.cat(logits, dim=1), whole, atol=1e-8, rtol=0)
    assert memory.shape == (1, 7, 8)
    assert extend_memory(memory, out.states, 3).shape == (1, 3, 8)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_implicit_gradients_match_backpropagation_through_the_solver(norm):
    text = tokens(length=5)
    results = []
    for backward in (eq.Implicit("anderson", tol=1e-13, stop_mode="abs", max_iter=300), "unrolled"):
        model = tiny_deq(norm, backward=backward, solver="anderson")
        loss = torch.nn.functional.cross_entropy(model(text).flatten(0, 1), text.roll(-1).flatten())
        loss.backward()
        assert model.stats.converged.all()
        results.append({n: p.grad.clone() for n, p in model.named_parameters()})
    implicit, unrolled = results
    assert implicit.keys() == unrolled.keys()
    for name in implicit:
        torch.testing.assert_close(implicit[name], unrolled[name], atol=1e-8, rtol=1e-6)


def test_gradcheck_of_the_equilibrium_wrt_injection_and_memory():
    torch.manual_seed(2)
    backward = eq.Implicit("anderson", tol=1e-12, stop_mode="abs", max_iter=200)
    model = DEQTransformer(5, 4, 2, expansion=1, backward=backward, **TIGHT).double()
    x = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(1, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, m: model.deq((x, m)), (x, memory), eps=1e-6, atol=1e-6, rtol=1e-5
    )


def test_jacobian_penalty_and_phantom_gradients_run_through_the_model():
    model = tiny_deq(
        backward=eq.Phantom(steps=5, tau=0.5),
        jacobian_penalty=eq.JacobianPenalty(gamma=0.5),
        max_iter=20,
    ).train()
    logits = model(tokens())
    penalty = model.stats.jacobian_loss
    assert float(penalty.detach()) > 0
    (logits.sum() + penalty).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- dropout, weight norm


def test_variational_dropout_keeps_one_mask_so_the_solve_converges():
    model = tiny_deq(dropout=0.3, weight_norm=True).train()
    text = tokens()
    out = model(text)
    assert model.stats.converged.all()
    again = model(text)  # a new forward draws new masks
    assert not torch.allclose(out, again)
    model.eval()
    torch.testing.assert_close(model(text), model(text))


# ---------------------------------------------------------------- memory of training


def saved_bytes(model, text):
    with SavedTensorBytes(exclude=model.parameters()) as saved:
        model(text).sum()
    return saved.bytes


def test_deq_activation_memory_is_flat_in_iterations_and_explicit_grows_with_depth():
    torch.manual_seed(0)
    text = torch.randint(20, (2, 16))
    deq = [
        saved_bytes(DEQTransformer(20, 16, 2, tol=0.0, max_iter=k, patience=None), text)
        for k in (4, 16)
    ]
    assert deq[0] == deq[1]
    explicit = [saved_bytes(ExplicitTransformer(20, 16, 2, layers=k), text) for k in (2, 4, 8)]
    per_layer = explicit[1] - explicit[0]
    assert per_layer > 0 and explicit[2] - explicit[1] == 2 * per_layer
    tied = [saved_bytes(ExplicitTransformer(20, 16, 2, layers=k, tied=True), text) for k in (2, 4)]
    assert tied[1] > tied[0]


# ---------------------------------------------------------------- errors


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="must divide width=10 into heads of even width"):
        DEQTransformer(7, 10, 4)
    with pytest.raises(ValueError, match="norm='mid' is not valid; choose one of post, pre"):
        DEQTransformer(7, 8, 2, norm="mid")
    model = DEQTransformer(7, 8, 2)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 7\)"):
        model(torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match="tokens must be an int64 tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="memory must have shape"):
        model(torch.tensor([[1, 2]]), memory=torch.zeros(1, 3, 5))
