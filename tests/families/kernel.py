"""M¹ from the attention kernel's own inputs, recorded independently of the families' code.

The suite records, by itself, each ``scaled_dot_product_attention`` call of the attention layers
the paper reads M¹ from (a spy on ``torch.nn.functional``, switched on by forward hooks on those
layers) and computes softmax(q kᵀ·scale + mask) of the concept rows' image queries over the
concept's token columns, averaged over heads and layers. Where the image queries and the text
keys sit in each family's kernel call is written in the family's test file (its :class:`Kernel`),
from the model's own description, not taken from the adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from leditspp import Conditioning
from leditspp.solvers import NoiseLevel

from . import seam

#: c_∅, then two concepts of different lengths (Z-Image: the long one needs a second 32-token caption block,
#: so the rows' sequences differ in length and the kernel gets a mask)
PROMPTS = ("", "a red circle", " ".join(["a blue cat wearing a hat"] * 5))


@dataclass(frozen=True)
class Kernel:
    """Where one family's armed kernel calls hold what M¹ needs, as the model describes its attention.

    ``prefixes``/``suffix``: the names of the armed attention modules (a prefix each may start with,
    then the suffix or one of the suffixes). ``order``: ``cross`` (queries: the image cells; keys: the
    text tokens), ``text_keys_first`` (DeepFloyd IF's added-KV attention: queries, the image cells;
    keys, [text; image] under one softmax),
    ``image_text`` (one sequence [image; text]), ``text_image`` ([text; image]) or ``image_pad_text``
    (Z-Image: [image padded to 32; caption], the caption mixed by its refiner before the main layers).
    ``masked``: whether the kernel is handed an attention mask.
    """

    prefixes: tuple[str, ...]
    suffix: str | tuple[str, ...]
    order: str
    masked: bool = False


def armed_layers(model: Any, kernel: Kernel) -> list[torch.nn.Module]:
    return [
        module
        for name, module in seam.network(model).named_modules()
        if name.startswith(kernel.prefixes) and name.endswith(kernel.suffix)
    ]


@contextlib.contextmanager
def kernel_calls(model: Any, kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple]]:
    """Every ``scaled_dot_product_attention`` call (query, key, mask, scale) the armed layers make."""
    calls: list[tuple] = []
    inside: list[bool] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if inside:
            calls.append((query.detach().clone(), key.detach().clone(), attn_mask, scale))
        return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)

    def enter(*_) -> None:
        inside.append(True)

    def leave(*_) -> None:
        inside.pop()

    hooks = []
    for layer in armed_layers(model, kernel):
        hooks += [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave)]
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        try:
            yield calls
        finally:
            for hook in hooks:
                hook.remove()


def places(order: str, queries: int, keys: int, cells: int, tokens: int) -> tuple[slice, int, slice]:
    """The image queries, the key of text token 0 and the text keys, for one kernel call of
    ``queries`` × ``keys`` on a grid of ``cells`` and a conditioning of ``tokens`` text tokens."""
    if order == "cross":
        return slice(None), 0, slice(None)
    if order == "text_keys_first":
        return slice(None), 0, slice(0, tokens)
    if order == "image_text":
        return slice(0, queries - tokens), keys - tokens, slice(keys - tokens, None)
    if order == "text_image":
        return slice(tokens, None), 0, slice(0, tokens)
    padded = -(-cells // 32) * 32
    return slice(0, cells), padded, slice(padded, None)


def direct(calls: list[tuple], row: int, positions: list[int], order: str, cells: int, tokens: int) -> torch.Tensor:
    """The layer mean of the head mean of softmax(q kᵀ·scale + mask) over the image queries of
    ``row``, summed over the key columns of text tokens ``positions``: (cells,)."""
    maps = []
    for query, key, mask, scale in calls:
        q, k = query[row].double(), key[row].double()  # (heads, S, d), (heads, K, d)
        image, first, _ = places(order, q.shape[1], k.shape[1], cells, tokens)
        logits = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if mask is not None:
            full = torch.broadcast_to(mask, (query.shape[0], *logits.shape))[row]
            logits = logits.masked_fill(~full, float("-inf")) if full.dtype == torch.bool else logits + full.double()
        probs = torch.softmax(logits, dim=-1)[:, image]
        assert probs.shape[1] == cells
        maps.append(probs[..., [first + j for j in positions]].sum(-1).mean(0))
    return torch.stack(maps).mean(0).float()


def inputs(model: Any, seed: int = 0) -> tuple[Conditioning, torch.Tensor, NoiseLevel]:
    """The conditioning of :data:`PROMPTS`, random latents of a 64 × 96 image, t = 600 on every row."""
    cond = seam.encode_prompts(model, list(PROMPTS))
    latents = seam.encode(model, torch.zeros(1, 3, 64, 96))
    x = torch.randn(len(PROMPTS), *latents.shape[1:], generator=torch.Generator().manual_seed(seed))
    t = torch.full((len(PROMPTS),), 600.0)
    a, s = seam.levels(model, t)
    return cond, x, NoiseLevel(t, a.float(), s.float())


def weights(model: Any, cond: Conditioning) -> tuple[torch.Tensor, list[list[int]]]:
    """Token weights (2, L) of the two concepts of :data:`PROMPTS` and their positions."""
    positions = [seam.token_positions(model, p) for p in PROMPTS[1:]]
    w = torch.zeros(len(positions), cond.embeds.shape[1])
    for row, p in enumerate(positions):
        w[row, p] = 1.0
    return w, positions


def check_m1(model: Any, kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    """For each concept row: the capture's map equals the direct softmax of the queries and keys
    the kernel received (mask applied as the kernel applies it), on the concept's columns; the two
    concepts' maps differ, and the network's output is the one it gives without the capture."""
    cond, x, level = inputs(model)
    w, positions = weights(model, cond)
    grid = seam.mask_grid(model, *x.shape[-2:])
    cells = grid[0] * grid[1]
    plain = seam.estimate(model, x, level, cond)
    with seam.capture(model) as recorder, kernel_calls(model, kernel, monkeypatch) as calls:
        recorder.arm(slice(1, None), w)
        captured = seam.estimate(model, x, level, cond)
        got = recorder.take(grid)
    assert torch.equal(plain, captured)
    assert len(calls) == len(armed_layers(model, kernel)) > 0 and all(positions)
    assert (calls[0][2] is not None) == kernel.masked
    tokens = cond.embeds.shape[1]
    expected = torch.stack([direct(calls, 1 + r, p, kernel.order, cells, tokens) for r, p in enumerate(positions)])
    assert got.shape == (2, *grid)
    assert torch.allclose(got.flatten(1), expected, atol=1e-5, rtol=1e-4)
    assert (got[0] - got[1]).abs().max() > 100 * (got.flatten(1) - expected).abs().max() + 1e-5
