"""Writing text with a trained character model, one character at a time.

A DEQ-Transformer is causal, so the equilibrium of earlier positions does not change when a
character is appended: generation keeps their states as the memory the new position attends to,
solves for the new position only, and starts that solve from the previous position's
equilibrium (a warm start). An explicit model re-reads its whole context for every character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.text import Vocabulary
from ..errors import check_nonnegative, check_positive_int
from ..models.transformer import DEQTransformer, extend_memory


@dataclass
class Generation:
    """The generated text (prompt excluded) and the forward NFE of the solve for each
    generated character but the last (empty for explicit models)."""

    text: str
    nfe: list[int] = field(default_factory=list)

    @property
    def mean_nfe(self) -> float | None:
        return sum(self.nfe) / len(self.nfe) if self.nfe else None


def pick(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """The next token for each row of `logits` (batch, vocab): the most likely one at
    temperature 0, else a draw from the softmax of logits / temperature over the top k."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model: nn.Module,
    vocab: Vocabulary,
    prompt: str,
    characters: int,
    *,
    context: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    warm_start: bool = True,
) -> Generation:
    """`characters` characters following `prompt`.

    Args:
        context: the most earlier characters each prediction sees (the training window).
        temperature, top_k: see `pick`.
        seed: seed of the draws.
        warm_start: DEQ only: start each solve from the previous position's equilibrium
            (else from zero).
    """
    check_positive_int("characters", characters)
    check_positive_int("context", context)
    check_nonnegative("temperature", temperature)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if not prompt:
        raise ValueError("the prompt must hold at least one character")
    model.eval()
    device = next(model.parameters()).device
    tokens = vocab.encode(prompt, "the prompt")[-context:].to(device)[None]
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, DEQTransformer):
        return _generate_deq(
            model, vocab, tokens, characters, context, temperature, top_k, generator, warm_start
        )
    written = []
    for _ in range(characters):
        token = pick(model(tokens[:, -context:])[:, -1], temperature, top_k, generator)
        tokens = torch.cat((tokens, token.to(device)[None]), dim=1)
        written.append(int(token))
    return Generation(vocab.decode(written))


def _generate_deq(
    model: DEQTransformer,
    vocab: Vocabulary,
    tokens: torch.Tensor,
    characters: int,
    context: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    warm_start: bool,
) -> Generation:
    out = model.run(tokens)
    memory = extend_memory(None, out.states, context - 1)
    z, written, nfe = out.z[:, -1:], [], []
    for i in range(characters):
        token = pick(out.logits[:, -1], temperature, top_k, generator).to(tokens.device)
        written.append(int(token))
        if i == characters - 1:
            break
        out = model.run(token[None], memory=memory, z0=z if warm_start else None)
        nfe.append(model.stats.forward_nfe)
        memory = extend_memory(memory, out.states, context - 1)
        z = out.z
    return Generation(vocab.decode(written), nfe)
