"""The cross-attention the mask M¹ needs, reduced on the fly (paper Eq. 13).

An :class:`AttentionRecorder` is family-agnostic: the capture (:mod:`leditspp.models.capture`)
hands it, layer by layer, the queries and keys of the concept rows exactly as the attention kernel
receives them, and it keeps only the head-mean of the softmax probabilities summed over each
concept's token columns: one (R, Q) sum per step instead of a per-head store.
"""

from __future__ import annotations

import torch

#: Queries per softmax chunk: bounds a joint-attention layer's probabilities to
#: R·heads·QUERY_CHUNK·K values.
QUERY_CHUNK = 1024


class AttentionRecorder:
    """Accumulates, over the wrapped layers of one network call, the concept rows' attention.

    Before a call, :meth:`arm` names the rows (a slice of the batch) and their token weights
    (R, L) — 1 on each concept's word tokens. After it, :meth:`take` returns the layer mean.
    """

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self._rows: slice | None = None
        self._weights: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0

    def arm(self, rows: slice, token_weights: torch.Tensor) -> None:
        self._rows, self._weights = rows, token_weights.float()
        self._sum, self._count = None, 0

    def disarm(self) -> None:
        self._rows = self._weights = self._sum = None
        self._count = 0

    @property
    def armed(self) -> bool:
        return self._rows is not None

    @property
    def rows(self) -> slice:
        """The armed rows of the network call (the concept rows)."""
        assert self._rows is not None
        return self._rows

    @property
    def tokens(self) -> int:
        """L, the text tokens of the armed token weights (R, L)."""
        assert self._weights is not None
        return self._weights.shape[1]

    @torch.no_grad()
    def record(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, text: slice, mask: torch.Tensor | None = None
    ) -> None:
        """Head-mean of the token-summed softmax(QKᵀ·scale + mask) for the armed rows: adds (R, Q).

        ``q``: (R, heads, Q, d) image queries; ``k``: (R, heads, K, d) every key of the layer — the
        softmax runs over all of them. ``text``: the keys of text tokens 0, 1, …, in order, where the
        token weights (R, L) apply; a slice that runs past the last key leaves the tokens it does
        not reach without probability. ``mask``: the kernel's ``attn_mask`` for these rows and
        queries, (R or 1, heads or 1, Q or 1, K): bool (False keys get no probability) or a float
        bias added to the logits. Computed in chunks of queries, so a joint layer's (Q, K) matrix
        is never held whole.
        """
        assert self._weights is not None
        k = k.float().transpose(-1, -2)
        bias = _logit_bias(mask)
        maps = []
        for i, chunk in enumerate(q.float().split(QUERY_CHUNK, dim=2)):
            logits = chunk @ k * scale
            if bias is not None:
                logits = logits + (bias if bias.shape[2] == 1 else bias[:, :, i * QUERY_CHUNK : (i + 1) * QUERY_CHUNK])
            columns = torch.softmax(logits, dim=-1)[..., text]  # (R, heads, q, C), C ≤ L
            weights = self._weights[:, None, : columns.shape[-1], None].to(columns.device)
            maps.append((columns @ weights)[..., 0].mean(dim=1))  # (R, q)
        total = torch.cat(maps, dim=1)
        self._sum = total if self._sum is None else self._sum + total
        self._count += 1

    def take(self, size: tuple[int, int]) -> torch.Tensor:
        """The mean over layers, shaped (R, h', w') for ``size = (h', w')``; resets the sum."""
        if self._sum is None or self._count != self.num_layers:
            raise RuntimeError(f"attention capture saw {self._count} of {self.num_layers} layers in the last call")
        if self._sum.shape[1] != size[0] * size[1]:
            raise RuntimeError(f"captured attention has {self._sum.shape[1]} cells; expected {size}")
        out = (self._sum / self._count).view(-1, *size)
        self._sum, self._count = None, 0
        return out


def _logit_bias(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The kernel's ``attn_mask`` as an additive fp32 bias: a bool mask's False keys get −inf, a
    float mask is added as it is."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.float()
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
