"""Causal Transformers for sequences: the DEQ-Transformer and its explicit counterpart.

Both are built from one `TransformerBlock` (causal self-attention with rotary positions and a
feed-forward layer) that receives the embedded input at every application. `DEQTransformer`
solves for the fixed point z* = block(z*, x) of one weight-tied block (Bai, Kolter and Koltun,
NeurIPS 2019); `ExplicitTransformer` applies L blocks in sequence (or one block L times), the
network the DEQ replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..deq import DEQ, DEQStats
from ..errors import check_choice, check_positive_int
from ..stability import VariationalDropout1d, parametrizations_cached
from ..stability import weight_norm as apply_weight_norm
from .attention import CausalSelfAttention
from .initializers import SequenceInitializer, initializer_options

NORMS = ("post", "pre")


class SequenceDropout(VariationalDropout1d):
    """Variational dropout on (batch, length, features): one draw per sample and feature,
    shared by every position (and, inside a DEQ, by every solver iteration)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TransformerBlock(nn.Module):
    """One block f(z, x): the state `z` plus the injection `x`, then attention and feed-forward.

    With norm="post" (the DEQ-Transformer's): a = LN(h + Attn(h)), out = LN(a + FF(a)) for
    h = z + x. With norm="pre": a = h + Attn(LN(h)), out = LN(a + FF(LN(a))); the closing LN
    keeps the map bounded, which an equilibrium needs. `memory` (batch, m, width) holds the
    attention inputs h of earlier positions, which every position may attend to.

    Args:
        width: features per position.
        heads: attention heads.
        expansion: hidden width of the feed-forward layer, as a multiple of `width`.
        norm: "post" or "pre".
        dropout: variational dropout rate on the attention output and the hidden features.
    """

    def __init__(
        self, width: int, heads: int, *, expansion: int = 4, norm: str = "post", dropout: float = 0
    ) -> None:
        super().__init__()
        check_positive_int("expansion", expansion)
        self.norm = check_choice("norm", norm, NORMS)
        self.attention = CausalSelfAttention(width, heads)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), SequenceDropout(dropout)
        )
        self.project = nn.Linear(expansion * width, width)
        self.attention_dropout = SequenceDropout(dropout)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm_out = nn.LayerNorm(width) if norm == "pre" else None

    def _attend(self, h: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        return self.attention_dropout(self.attention(h, memory))

    def _feed(self, a: torch.Tensor) -> torch.Tensor:
        return self.project(self.feed_forward(a))

    def forward(
        self, z: torch.Tensor, x: torch.Tensor, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = z + x
        if self.norm == "post":
            a = self.norm1(h + self._attend(h, memory))
            return self.norm2(a + self._feed(a))
        normed_memory = None if memory is None else self.norm1(memory)
        a = h + self._attend(self.norm1(h), normed_memory)
        return self.norm_out(a + self._feed(self.norm2(a)))


class SequenceCell(nn.Module):
    """The DEQ's cell: f(z, (x,)) or f(z, (x, memory)) = block(z, x, memory)."""

    def __init__(self, block: TransformerBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, z: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.block(z, *inputs)

    def init_state(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.zeros_like(inputs[0])


@dataclass
class SequenceOutput:
    """What a `DEQTransformer.run` call produced.

    Attributes:
        logits: (batch, length, vocab) next-character scores.
        z: (batch, length, width) the equilibrium, detached (a warm start for later calls).
        states: (batch, length, width) the attention inputs z* + x, detached: the memory that
            later segments attend to.
    """

    logits: torch.Tensor
    z: torch.Tensor
    states: torch.Tensor


def extend_memory(memory: torch.Tensor | None, states: torch.Tensor, length: int) -> torch.Tensor:
    """The last `length` positions of `memory` followed by `states` (detached)."""
    joined = states.detach() if memory is None else torch.cat((memory, states.detach()), dim=1)
    return joined[:, max(joined.shape[1] - length, 0) :]


class _LanguageModel(nn.Module):
    """Embedding, a stack producing (batch, length, width) features, final norm and head."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        check_positive_int("vocab", vocab, minimum=2)
        check_positive_int("width", width)
        self.vocab, self.width = vocab, width
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.int64:
            raise ValueError(
                f"tokens must be an int64 tensor (batch, length), got {tokens.dtype} of shape "
                f"{tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab):
            raise ValueError(
                f"tokens must lie in [0, {self.vocab}), got values from {int(tokens.min())} to "
                f"{int(tokens.max())}"
            )
        return self.embed(tokens)

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features))


class DEQTransformer(_LanguageModel):
    """A character (or token) language model whose body is the equilibrium of one block.

    Args:
        vocab: number of symbols.
        width, heads, expansion, norm, dropout: the block (see `TransformerBlock`).
        weight_norm: weight-normalize the block's linear layers (computed once per solve).
        memory: positions of past equilibria a training segment may attend to (0: none); see
            `run` and `extend_memory`.
        init: "zeros" or "joint" (a `SequenceInitializer` trained with the model guesses the
            start of each solve without a warm start; see `eq.DEQ(initializer=)`).
        init_weight: the weight of the initializer's fit loss.
        solver, tol, max_iter, **deq_options: settings of the `eq.DEQ` layer (backward,
            jacobian_penalty, eval_max_iter, ...). `on_failure` defaults to "ignore": training
            runs at a small cap on purpose, and `model.stats` tells how far each solve got.

    Example:
        >>> model = DEQTransformer(vocab=65, width=64, heads=4, max_iter=12)
        >>> logits = model(torch.randint(65, (8, 32)))   # (8, 32, 65)
    """

    def __init__(
        self,
        vocab: int,
        width: int = 64,
        heads: int = 4,
        *,
        expansion: int = 4,
        norm: str = "post",
        dropout: float = 0.0,
        weight_norm: bool = True,
        memory: int = 0,
        init: str = "zeros",
        init_weight: float = 1.0,
        solver: str = "anderson",
        tol: float = 1e-3,
        max_iter: int = 12,
        **deq_options: Any,
    ) -> None:
        super().__init__(vocab, width)
        self.memory = check_positive_int("memory", memory, minimum=0)
        block = TransformerBlock(width, heads, expansion=expansion, norm=norm, dropout=dropout)
        if weight_norm:
            apply_weight_norm(block)
        self.cell = SequenceCell(block)
        deq_options.setdefault("on_failure", "ignore")
        deq_options.update(
            initializer_options(init, init_weight, lambda: SequenceInitializer(width))
        )
        self.deq = DEQ(self.cell, solver, tol=tol, max_iter=max_iter, **deq_options)

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last forward solve (`eq.DEQStats`)."""
        return self.deq.stats

    def run(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor | None = None,
        z0: torch.Tensor | None = None,
        **solve: Any,
    ) -> SequenceOutput:
        """Solve for the equilibrium of `tokens` (batch, length).

        `memory` (batch, m, width) holds the `states` of the m positions just before the
        segment, `z0` a warm start of shape (batch, length, width); `solve` overrides the DEQ
        settings for this call (solver=, tol=, max_iter=, on_failure=).
        """
        x = self._embed(tokens)
        if memory is not None and (memory.dim() != 3 or memory.shape[::2] != x.shape[::2]):
            raise ValueError(
                f"memory must have shape (batch={x.shape[0]}, positions, width={self.width}), "
                f"got {tuple(memory.shape)}"
            )
        inputs = (x,) if memory is None else (x, memory.to(x.dtype))
        z = self.deq(inputs, z0=z0, **solve)
        return SequenceOutput(self._logits(z), z.detach(), (z + x).detach())

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor | None = None, **solve: Any
    ) -> torch.Tensor:
        """Next-symbol scores (batch, length, vocab) for `tokens` (batch, length)."""
        return self.run(tokens, memory, **solve).logits


class ExplicitTransformer(_LanguageModel):
    """The explicit baseline: `layers` blocks applied in sequence to z_0 = 0, each receiving the
    embedded input, z_{k+1} = block_k(z_k, x); with `tied`, one block applied `layers` times
    (the DEQ's cell unrolled). Other arguments as `DEQTransformer`."""

    def __init__(
        self,
        vocab: int,
        width: int = 64,
        heads: int = 4,
        *,
        layers: int = 8,
        tied: bool = False,
        expansion: int = 4,
        norm: str = "post",
        dropout: float = 0.0,
        weight_norm: bool = True,
    ) -> None:
        super().__init__(vocab, width)
        self.layers = check_positive_int("layers", layers)
        self.tied = bool(tied)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, expansion=expansion, norm=norm, dropout=dropout)
            for _ in range(1 if tied else layers)
        )
        if weight_norm:
            apply_weight_norm(self.blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-symbol scores (batch, length, vocab) for `tokens` (batch, length)."""
        x = self._embed(tokens)
        z = torch.zeros_like(x)
        with parametrizations_cached(self.blocks):  # a tied block's weights: computed once
            for k in range(self.layers):
                z = self.blocks[0 if self.tied else k](z, x)
        return self._logits(z)
