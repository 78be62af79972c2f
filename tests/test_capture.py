"""Attention the capture cannot see is refused, and the capture's wrapper is invisible.

Every family's M¹ against its attention kernel's own inputs, and its output bit for bit under the
capture, are checked in the conformance suite (``tests/families/``); this file holds what is not a
family's: the refusals (a UNet processor without the kernel, a diffusers backend that bypasses it, a
layer with two kernel calls) and the wrapper's signature and forwarding.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from leditspp import Editor, LeditsError
from leditspp.models.capture import CROSS_ATTENTION, capture_layers

from .families.kernel import inputs, weights


@pytest.fixture(scope="module")
def chroma():
    from leditspp.testing.tiny2026 import tiny_chroma_pipeline

    return Editor.from_pipe(tiny_chroma_pipeline(seed=0))


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
    cond, x, level = inputs(model)
    w, _ = weights(model, cond)
    model.denoiser.transformer.set_attention_backend("flex")
    try:
        with pytest.raises(LeditsError, match=r"set_attention_backend\('native'\)"), model.capture_attention() as rec:
            rec.arm(slice(1, None), w)
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
