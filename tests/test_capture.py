"""The attention mask M¹ is read from the attention kernel's own inputs, and changes nothing.

For every family the test records, by itself, each ``scaled_dot_product_attention`` call of the
attention layers the paper reads M¹ from (a spy on ``torch.nn.functional``, switched on by forward
hooks on those layers), computes softmax(q kᵀ·scale + mask) of the concept rows' image queries,
sums the concept's token columns, averages heads and layers, and compares with the editor's capture.
Where the image queries and the text keys sit in each family's kernel call is written here, from
the models' own descriptions, not taken from the adapters; a second check perturbs the concept's
text embeddings and finds the keys that move in the first armed layer, so a layout change in
diffusers fails here instead of being mirrored. The capture must also leave every output bit as
it was, and refuse an attention it cannot see.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from leditspp import Conditioning, Editor, LeditsError
from leditspp.models import registered
from leditspp.models.capture import CROSS_ATTENTION, capture_layers
from leditspp.solvers import NoiseLevel

from .test_toy_family import Toy, toy_components  # noqa: F401 (a fixture)

#: c_∅, then two concepts of different lengths (Z-Image: the long one needs a second 32-token caption block,
#: so the rows' sequences differ in length and the kernel gets a mask)
PROMPTS = ("", "a red circle", " ".join(["a blue cat wearing a hat"] * 5))


@dataclass(frozen=True)
class Kernel:
    """Where one family's armed kernel calls hold what M¹ needs, as the model describes its attention.

    ``layers``: the names of the armed attention modules (a prefix each may start with, then the
    suffix). ``order``: ``cross`` (queries: the image cells; keys: the text tokens), ``image_text``
    (one sequence [image; text]), ``text_image`` ([text; image]) or ``image_pad_text`` (Z-Image:
    [image padded to 32; caption], the caption mixed by its refiner before the main layers).
    """

    prefixes: tuple[str, ...]
    suffix: str | tuple[str, ...]
    order: str


KERNELS = {
    "sd": Kernel(("down_blocks.2.", "up_blocks.1."), "attn2", "cross"),  # ¼ of the latents, mid block out
    "sdxl": Kernel(("down_blocks.2.", "up_blocks.0."), "attn2", "cross"),
    "sd3": Kernel(("transformer_blocks.",), ".attn", "image_text"),
    "flux": Kernel(("transformer_blocks.",), ".attn", "text_image"),  # the double-stream blocks
    "chroma": Kernel(("transformer_blocks.",), ".attn", "text_image"),
    "klein": Kernel(("transformer_blocks.", "single_transformer_blocks."), ".attn", "text_image"),
    "qwenimage": Kernel(("transformer_blocks.",), ".attn", "text_image"),
    "zimage": Kernel(("layers.",), ".attention", "image_pad_text"),
    "toy": Kernel(("",), "attn", "cross"),
    # 8×8 of 64² (the tiny UNet has 1 attention per down block, 2 per up block), mid block out
    "deepfloyd-if": Kernel(("down_blocks.3.", "up_blocks.0."), ("attentions.0", "attentions.1"), "text_keys_first"),
}
FAMILIES = [
    "editor",
    "xl_editor",
    "sd3_editor",
    "flux_editor",
    "klein",
    "zimage",
    "qwenimage",
    "chroma",
    "toy",
    "if_editor",
]


@pytest.fixture(scope="module")
def sd35(tokenizer, tokenizer_2, tokenizer_t5):
    """SD3.5's joint attention: q/k RMS norms, their weights perturbed so that they count."""
    from leditspp.testing import tiny_sd3_pipeline

    pipe = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0, qk_norm="rms_norm")
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for block in pipe.transformer.transformer_blocks:
            for norm in (block.attn.norm_q, block.attn.norm_k, block.attn.norm_added_k):
                norm.weight.mul_(torch.rand_like(norm.weight) * 3 + 0.2)
    return Editor.from_pipe(pipe)


@pytest.fixture(scope="module")
def klein():
    from leditspp.testing.tiny2026 import tiny_klein_pipeline

    return Editor.from_pipe(tiny_klein_pipeline(seed=0))


@pytest.fixture(scope="module")
def zimage():
    """The tiny Z-Image with its attention softened (the tiny model's logits reach ±50, where a
    masked padding key's zero logit would weigh nothing either way), so the mask visibly counts."""
    from leditspp.testing.tiny2026 import tiny_zimage_pipeline

    editor = Editor.from_pipe(tiny_zimage_pipeline(seed=0))
    with torch.no_grad():
        for layer in editor.model.denoiser.transformer.layers:
            layer.attention.norm_q.weight.mul_(0.1)
            layer.attention.norm_k.weight.mul_(0.1)
    return editor


@pytest.fixture(scope="module")
def qwenimage():
    from leditspp.testing.tiny2026 import tiny_qwenimage_pipeline

    return Editor.from_pipe(tiny_qwenimage_pipeline(seed=0))


@pytest.fixture(scope="module")
def chroma():
    from leditspp.testing.tiny2026 import tiny_chroma_pipeline

    return Editor.from_pipe(tiny_chroma_pipeline(seed=0))


@pytest.fixture(scope="module")
def toy(toy_components):  # noqa: F811 (the imported fixture)
    with registered(Toy):
        return Editor.from_pipe(toy_components)


def _network(model) -> torch.nn.Module:
    return model.denoiser.unet if hasattr(model.denoiser, "unet") else model.denoiser.transformer


def _armed_layers(model) -> list[torch.nn.Module]:
    kernel = KERNELS[model.family]
    return [
        module
        for name, module in _network(model).named_modules()
        if name.startswith(kernel.prefixes) and name.endswith(kernel.suffix)
    ]


@contextlib.contextmanager
def kernel_calls(model, monkeypatch) -> Iterator[list[tuple]]:
    """Every ``scaled_dot_product_attention`` call (query, key, mask, scale) the armed layers make."""
    calls: list[tuple] = []
    inside: list[bool] = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if inside:
            calls.append((query.detach().clone(), key.detach().clone(), attn_mask, scale))
        return kernel(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)

    def enter(*_) -> None:
        inside.append(True)

    def leave(*_) -> None:
        inside.pop()

    hooks = []
    for layer in _armed_layers(model):
        hooks += [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave)]
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        try:
            yield calls
        finally:
            for hook in hooks:
                hook.remove()


def _places(order: str, queries: int, keys: int, cells: int, tokens: int) -> tuple[slice, int, slice]:
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


def _direct(calls: list[tuple], row: int, positions: list[int], order: str, cells: int, tokens: int) -> torch.Tensor:
    """The layer mean of the head mean of softmax(q kᵀ·scale + mask) over the image queries of
    ``row``, summed over the key columns of text tokens ``positions``: (cells,)."""
    maps = []
    for query, key, mask, scale in calls:
        q, k = query[row].double(), key[row].double()  # (heads, S, d), (heads, K, d)
        image, first, _ = _places(order, q.shape[1], k.shape[1], cells, tokens)
        logits = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if mask is not None:
            full = torch.broadcast_to(mask, (query.shape[0], *logits.shape))[row]
            logits = logits.masked_fill(~full, float("-inf")) if full.dtype == torch.bool else logits + full.double()
        probs = torch.softmax(logits, dim=-1)[:, image]
        assert probs.shape[1] == cells
        maps.append(probs[..., [first + j for j in positions]].sum(-1).mean(0))
    return torch.stack(maps).mean(0).float()


def _inputs(model, seed: int = 0):
    cond = model.encode_prompts(list(PROMPTS))
    latents = model.encode(torch.zeros(1, 3, 64, 96))
    x = torch.randn(len(PROMPTS), *latents.shape[1:], generator=torch.Generator().manual_seed(seed))
    t = torch.full((len(PROMPTS),), 600.0)
    a, s = model.path.levels(t)
    return cond, x, NoiseLevel(t, a.float(), s.float())


def _weights(model, cond) -> tuple[torch.Tensor, list[list[int]]]:
    positions = [model.token_positions(p) for p in PROMPTS[1:]]
    weights = torch.zeros(len(positions), cond.embeds.shape[1])
    for row, p in enumerate(positions):
        weights[row, p] = 1.0
    return weights, positions


@pytest.mark.parametrize("family", [*FAMILIES, "sd35"])
def test_m1_is_the_softmax_of_the_kernels_own_inputs(family, request, monkeypatch):
    """For each concept row: the capture's map equals the direct softmax of the queries and keys
    the kernel received (mask applied as the kernel applies it), on the concept's columns; the two
    concepts' maps differ, and the network's output is the one it gives without the capture."""
    model = request.getfixturevalue(family).model
    order = KERNELS[model.family].order
    cond, x, level = _inputs(model)
    weights, positions = _weights(model, cond)
    grid = model.mask_grid(*x.shape[-2:])
    cells = grid[0] * grid[1]
    plain = model.estimate(x, level, cond)
    with model.capture_attention() as recorder, kernel_calls(model, monkeypatch) as calls:
        recorder.arm(slice(1, None), weights)
        captured = model.estimate(x, level, cond)
        got = recorder.take(grid)
    assert torch.equal(plain, captured)
    assert len(calls) == len(_armed_layers(model)) > 0 and all(positions)
    assert (calls[0][2] is not None) == (family in ("zimage", "qwenimage", "chroma"))  # the masked families
    tokens = cond.embeds.shape[1]
    direct = torch.stack([_direct(calls, 1 + r, p, order, cells, tokens) for r, p in enumerate(positions)])
    assert got.shape == (2, *grid)
    assert torch.allclose(got.flatten(1), direct, atol=1e-5, rtol=1e-4)
    assert (got[0] - got[1]).abs().max() > 100 * (got.flatten(1) - direct).abs().max() + 1e-5


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "if_editor"])  # IF: see the next test
def test_the_concepts_text_keys_are_where_this_test_reads_them(family, request, monkeypatch):
    """The test's own layout, checked on the kernel's keys: changing the concept's text embeddings
    moves, in the first armed layer, its token columns (and for a cross-attention or an MMDiT only
    those; Z-Image's caption refiner moves the whole caption), and never an image key."""
    model = request.getfixturevalue(family).model
    order = KERNELS[model.family].order
    cond, x, level = _inputs(model)
    _, positions = _weights(model, cond)
    grid = model.mask_grid(*x.shape[-2:])
    moved = cond.embeds.clone()
    moved[1, positions[0]] += 1.0
    keys = []
    for embeds in (cond.embeds, moved):
        with kernel_calls(model, monkeypatch) as calls:
            model.estimate(x, level, Conditioning({**cond.tensors, "embeds": embeds}))
        keys.append(calls[0][1][1])  # row 1's keys in the first armed layer, (heads, K, d)
    changed = ((keys[1] - keys[0]).abs().amax(dim=(0, 2)) > 1e-6).nonzero().flatten().tolist()
    _, first, text = _places(order, calls[0][0].shape[2], keys[0].shape[1], grid[0] * grid[1], cond.embeds.shape[1])
    stated = [first + j for j in positions[0]]
    assert set(stated) <= set(changed) <= set(range(keys[0].shape[1])[text])
    if order != "image_pad_text":
        assert changed == stated


def test_deepfloyd_ifs_text_keys_are_its_added_key_projection_first(if_editor, monkeypatch):
    """IF pools the text into its time embedding, so changing a concept moves image keys too; its
    text keys are told instead by the layers' added key projection (the text's own keys): in every
    armed kernel call the first L keys are that projection's output split into heads, and the
    image cells' L + h·w keys follow."""
    model = if_editor.model
    cond, x, level = _inputs(model)
    grid = model.mask_grid(*x.shape[-2:])
    projected: list[torch.Tensor] = []
    hooks = [
        layer.add_k_proj.register_forward_hook(lambda _m, _i, out: projected.append(out.detach().clone()))
        for layer in _armed_layers(model)
    ]
    try:
        with kernel_calls(model, monkeypatch) as calls:
            model.estimate(x, level, cond)
    finally:
        for hook in hooks:
            hook.remove()
    tokens = cond.embeds.shape[1]
    assert len(calls) == len(projected) == len(_armed_layers(model)) > 0
    for (_, key, _, _), text in zip(calls, projected, strict=True):
        rows, heads, count, dim = key.shape
        assert count == tokens + grid[0] * grid[1]
        assert torch.equal(key[:, :, :tokens], text.view(rows, tokens, heads, dim).transpose(1, 2))


@pytest.mark.parametrize("family", ["editor", "zimage"])
def test_a_wrong_row_or_column_would_fail_the_comparison(family, request, monkeypatch):
    """The direct map above tells rows and columns apart: the neighbouring row's map and the map
    one column further both differ from the right one by far more than the tolerance."""
    model = request.getfixturevalue(family).model
    order = KERNELS[model.family].order
    cond, x, level = _inputs(model)
    _, positions = _weights(model, cond)
    grid = model.mask_grid(*x.shape[-2:])
    with kernel_calls(model, monkeypatch) as calls:
        model.estimate(x, level, cond)
    tokens, cells = cond.embeds.shape[1], grid[0] * grid[1]
    right = _direct(calls, 1, positions[0], order, cells, tokens)
    for wrong in (
        _direct(calls, 2, positions[0], order, cells, tokens),
        _direct(calls, 1, [p + 1 for p in positions[0]], order, cells, tokens),
    ):
        assert (wrong - right).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_leaves_the_network_bit_identical(family, request):
    model = request.getfixturevalue(family).model
    cond, x, level = _inputs(model, seed=1)
    weights, _ = _weights(model, cond)
    plain = model.estimate(x, level, cond)
    with model.capture_attention() as recorder:
        unarmed = model.estimate(x, level, cond)
        recorder.arm(slice(2, 3), weights[1:])
        armed = model.estimate(x, level, cond)
        recorded = recorder.take(model.mask_grid(*x.shape[-2:]))
    assert torch.equal(plain, unarmed) and torch.equal(plain, armed)
    assert recorded.shape == (1, *model.mask_grid(*x.shape[-2:])) and recorded.sum() > 0


# -- an attention the capture cannot see ------------------------------------------------------------


def test_a_unet_attention_without_the_kernel_is_refused(editor, tokenizer):
    """diffusers' classic ``AttnProcessor`` (baddbmm and softmax, no SDPA) on the UNet: a masked
    edit is refused with the fix, the processors come back, and the noise mask still edits."""
    from diffusers.models.attention_processor import AttnProcessor

    from leditspp.testing import tiny_sd_pipeline

    from .conftest import scene

    pipe = tiny_sd_pipeline(tokenizer, seed=0)
    pipe.unet.set_attn_processor(AttnProcessor())
    editor = Editor.from_pipe(pipe)
    inversion = editor.invert(scene(seed=3), steps=3, seed=0)
    with pytest.raises(LeditsError, match=r"AttnProcessor\) does not call.*AttnProcessor2_0\(\)"):
        editor.edit(inversion, "+a hat", mask_mode="intersect", decode=False)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor}
    assert torch.isfinite(editor.edit(inversion, "+a hat", mask_mode="noise", decode=False).latents).all()


def test_a_diffusers_backend_without_the_kernel_is_refused(chroma):
    """diffusers' ``flex`` attention backend bypasses SDPA: refused, naming the backend fix."""
    model = chroma.model
    cond, x, level = _inputs(model)
    weights, _ = _weights(model, cond)
    model.denoiser.transformer.set_attention_backend("flex")
    try:
        with pytest.raises(LeditsError, match=r"set_attention_backend\('native'\)"), model.capture_attention() as rec:
            rec.arm(slice(1, None), weights)
            model.estimate(x, level, cond)
    finally:
        model.denoiser.transformer.set_attention_backend("native")


def test_a_layer_with_two_kernel_calls_is_refused():
    """One kernel call per armed layer: a second (an adapter's extra tokens) is refused, not mixed in."""
    from diffusers.models.attention_processor import Attention

    class Twice:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            x = hidden_states[:, None]
            kernel = torch.nn.functional.scaled_dot_product_attention
            return (kernel(x, x, x) + kernel(x, x, x))[:, 0]

    attn = Attention(query_dim=8, heads=1, dim_head=8, processor=Twice())
    with capture_layers(torch.nn.Module(), [attn], CROSS_ATTENTION) as recorder:
        recorder.arm(slice(0, 1), torch.ones(1, 3))
        with pytest.raises(LeditsError, match="made 2 attention kernel calls"):
            attn(torch.randn(1, 3, 8))


# -- the wrapper ------------------------------------------------------------------------------------


class _KeywordProcessor:
    """A processor whose output depends on a keyword only its own signature names."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
        x = hidden_states[:, None]  # one head
        out = torch.nn.functional.scaled_dot_product_attention(x, x, x)[:, 0]
        return out if freqs_cis is None else out + freqs_cis


def test_the_wrapper_presents_the_inner_signature_and_forwards_everything():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=8, heads=2, dim_head=4, processor=_KeywordProcessor())
    x = torch.randn(1, 3, 8)
    expected = _KeywordProcessor()(attn, x, freqs_cis=torch.ones(1))
    with capture_layers(torch.nn.Module(), [attn], CROSS_ATTENTION) as recorder:
        assert set(inspect.signature(attn.processor.__call__).parameters) == set(
            inspect.signature(_KeywordProcessor().__call__).parameters
        )
        recorder.arm(slice(0, 1), torch.ones(1, 3))
        out = attn(x, freqs_cis=torch.ones(1))
        recorded = recorder.take((1, 3))
    assert torch.equal(out, expected), "the processor's own keyword was dropped on the way"
    assert torch.allclose(recorded.sum(), torch.tensor(3.0))  # each query's probabilities over 3 text keys
    assert isinstance(attn.processor, _KeywordProcessor), "the original processor is back"


def test_text_past_the_last_key_gets_no_probability():
    """A text slice running past the keys (a call whose captions are shorter than the token
    weights): the tokens it does not reach add nothing, the others are read where they are."""
    from leditspp.attention import AttentionRecorder

    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8)
    recorder = AttentionRecorder(1)
    recorder.arm(slice(0, 1), torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0]]))  # tokens 3, 4: no key
    recorder.record(q, k, 0.5, slice(4, 9))
    probs = torch.softmax(q[0] @ k[0].transpose(-1, -2) * 0.5, dim=-1)
    assert torch.allclose(recorder.take((2, 2)).flatten(), probs[..., 4].mean(0), atol=1e-6)


@pytest.mark.parametrize("family", ["editor", "xl_editor", "sd3_editor", "flux_editor", "if_editor"])
def test_a_concepts_token_weights_sit_exactly_on_its_word_tokens(family, request):
    """Editor level: the weights (E, L) are 1 where the encoded sequence holds the concept's own
    word tokens (found here from the padded ids) and 0 elsewhere — never on a start token."""
    from leditspp import Edit

    editor = request.getfixturevalue(family)
    model = editor.model
    weights = editor._concepts((Edit("red circle"), Edit("a blue cat")), use_attention=True).token_weights
    tokenizer, offset, length = model.text.tokenizer, 0, model.text.tokenizer.model_max_length
    if getattr(model.text, "tokenizer_3", None) is not None:  # SD3: T5's tokens follow CLIP's 77
        tokenizer, offset, length = (
            model.text.tokenizer_3,
            model.text.tokenizer.model_max_length,
            model.text.max_sequence_length,
        )
    elif model.family == "flux":
        tokenizer, length = model.text.tokenizer_2, model.text.max_sequence_length
    for row, prompt in enumerate(("red circle", "a blue cat")):
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        words = [t for t in tokenizer(prompt).input_ids if t not in special]
        padded = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
        expected = [offset + i for i, t in enumerate(padded) if t in words]
        assert weights[row].nonzero().flatten().tolist() == expected and len(expected) >= len(words) > 0
