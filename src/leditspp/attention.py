"""The cross-attention the mask M¹ needs, reduced on the fly (paper Eq. 13; SPEC A3, A8, B §6.1).

An :class:`AttentionRecorder` is family-agnostic: a model adapter's capture (for UNets,
:mod:`leditspp.models.unet_attention`) hands it the queries and keys of the concept rows at the
mask level, layer by layer, and it keeps only the head-mean of the softmax probabilities summed
over each concept's token columns: one (R, Q) sum per step instead of a per-head store.
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
    def text_width(self) -> int:
        """L, the token columns of the armed weights (R, L)."""
        assert self._weights is not None
        return self._weights.shape[1]

    @torch.no_grad()
    def record(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        scale: float,
        text: slice | torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Head-mean of the token-summed softmax(QKᵀ·scale) for the armed rows: adds (R, Q).

        ``q``: (R, heads, Q, d) image queries; ``k``: (R, heads, K, d) the keys of one layer —
        only text keys for cross-attention (``text`` None), or image and text keys of a joint
        attention (MMDiT, or one unified sequence), where the softmax runs over all of them and
        ``text`` says where the L text columns the token weights (R, L) apply to are: one slice
        for every row, or (R, L) key indices per row (where rows lay their text out differently,
        e.g. captions of different lengths in a single-stream sequence). ``mask`` is the layer's
        attention mask as SDPA's ``attn_mask`` applies it: bool (R, K), True on the keys each row
        attends, False keys get no probability (Qwen-Image's padded text, Z-Image's batch padding);
        or a float bias added to the logits, broadcastable to (R, heads, Q, K) (Chroma's 0/1 mask,
        which SDPA adds). Computed in chunks of queries, so a joint layer's (Q, K) matrix is never
        held whole.
        """
        assert self._weights is not None
        weights = self._weights.to(q.device)[:, None, :, None]  # (R, 1, L, 1)
        k = k.float().transpose(-1, -2)
        maps = []
        bias = _logit_bias(mask, q.device)
        for i, chunk in enumerate(q.float().split(QUERY_CHUNK, dim=2)):
            logits = chunk @ k * scale
            if bias is not None:
                logits = logits + (bias if bias.shape[2] == 1 else bias[:, :, i * QUERY_CHUNK : (i + 1) * QUERY_CHUNK])
            probs = torch.softmax(logits, dim=-1)  # (R, heads, q, K)
            if isinstance(text, slice):
                probs = probs[..., text]
            elif text is not None:
                probs = probs.gather(-1, text.to(probs.device)[:, None, None, :].expand(*probs.shape[:3], -1))
            maps.append((probs @ weights)[..., 0].mean(dim=1))  # (R, q)
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


def _logit_bias(mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """SDPA's ``attn_mask`` as an additive fp32 bias (R, 1 or heads, 1 or Q, K): a bool mask's
    False keys get −inf, a float mask is added as it is."""
    if mask is None:
        return None
    mask = mask.to(device)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, float("-inf"))
    mask = mask.float()
    return mask[:, None, None, :] if mask.dim() == 2 else mask
