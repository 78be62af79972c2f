"""The attention capture changes nothing the network computes (issue 21, seams).

diffusers' ``Attention.forward`` drops every keyword argument its processor's signature does not
name, so a wrapper with a narrower signature silently changes the network (Qwen-Image's text mask,
Z-Image's ``freqs_cis``). These tests install the capture on every family and compare outputs
bit for bit, armed and unarmed, and check that a processor's own keyword reaches it.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from leditspp.models.capture import capture_layers
from leditspp.solvers import NoiseLevel


def _level(model, rows: int) -> NoiseLevel:
    t = torch.full((rows,), 500.0)
    a, s = model.path.levels(t)
    return NoiseLevel(t, a.float(), s.float())


@pytest.mark.parametrize("family", ["editor", "xl_editor", "sd3_editor", "flux_editor"])
def test_capture_leaves_the_network_bit_identical(family, request):
    model = request.getfixturevalue(family).model
    cond = model.encode_prompts(["a red hat", "a blue cat"])
    x = torch.randn(2, *model.encode(torch.zeros(1, 3, 64, 64)).shape[1:], generator=torch.Generator().manual_seed(0))
    plain = model.estimate(x, _level(model, 2), cond)
    positions = model.token_positions("a blue cat")
    weights = torch.zeros(1, cond.embeds.shape[1])
    weights[0, positions] = 1
    with model.capture_attention() as recorder:
        unarmed = model.estimate(x, _level(model, 2), cond)
        recorder.arm(slice(1, 2), weights)
        armed = model.estimate(x, _level(model, 2), cond)
        recorded = recorder.take(model.mask_grid(*x.shape[-2:]))
    assert torch.equal(plain, unarmed) and torch.equal(plain, armed)
    assert recorded.shape == (1, *model.mask_grid(*x.shape[-2:])) and recorded.sum() > 0


class _KeywordProcessor:
    """A processor whose output depends on a keyword only its own signature names."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
        return hidden_states if freqs_cis is None else hidden_states + freqs_cis


def test_the_wrapper_presents_the_inner_signature_and_forwards_everything():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=8, heads=2, dim_head=4, processor=_KeywordProcessor())
    x = torch.randn(1, 3, 8)
    seen = {}

    def record(recorder, layer, args):
        seen.update(args)

    network = torch.nn.Module()
    with capture_layers(network, [attn], record) as recorder:
        assert set(inspect.signature(attn.processor.__call__).parameters) == set(
            inspect.signature(_KeywordProcessor().__call__).parameters
        )
        recorder.arm(slice(0, 1), torch.ones(1, 3))
        out = attn(x, freqs_cis=torch.ones(1))
    assert torch.equal(out, x + 1), "the processor's own keyword was dropped on the way"
    assert torch.equal(seen["freqs_cis"], torch.ones(1)) and seen["hidden_states"] is x
    assert isinstance(attn.processor, _KeywordProcessor), "the original processor is back"


def test_per_row_text_columns_select_each_rows_tokens():
    """A recorder given (R, L) key indices reads each row's text where that row has it."""
    from leditspp.attention import AttentionRecorder

    q = torch.randn(2, 1, 4, 8)
    k = torch.randn(2, 1, 6, 8)
    by_slice, by_index = AttentionRecorder(1), AttentionRecorder(1)
    by_slice.arm(slice(0, 2), torch.ones(2, 2))
    by_slice.record(q, k, 0.5, text=slice(4, 6))
    by_index.arm(slice(0, 2), torch.ones(2, 2))
    by_index.record(q, k, 0.5, text=torch.tensor([[4, 5], [4, 5]]))
    assert torch.allclose(by_slice.take((2, 2)), by_index.take((2, 2)))
    shifted = AttentionRecorder(1)
    shifted.arm(slice(0, 2), torch.ones(2, 2))
    shifted.record(q, k, 0.5, text=torch.tensor([[4, 5], [0, 1]]))
    probs = torch.softmax(q[1, 0] @ k[1, 0].T * 0.5, dim=-1)[:, :2].sum(-1)
    assert torch.allclose(shifted.take((2, 2))[1].flatten(), probs, atol=1e-6)


@pytest.mark.parametrize("family", ["editor", "xl_editor", "sd3_editor", "flux_editor"])
def test_a_concepts_token_weights_sit_exactly_on_its_word_tokens(family, request):
    """Editor level: the weights (E, L) are 1 where the encoded sequence holds the concept's own
    word tokens (found here from the padded ids) and 0 elsewhere — never on a start token."""
    from leditspp import Edit

    editor = request.getfixturevalue(family)
    model = editor.model
    weights = editor._concepts((Edit("red circle"), Edit("a blue cat")), use_attention=True).token_weights
    tokenizer, offset, length = model.tokenizer, 0, model.tokenizer.model_max_length
    if getattr(model, "tokenizer_3", None) is not None:  # SD3: T5's tokens follow CLIP's 77
        tokenizer, offset, length = model.tokenizer_3, model.tokenizer.model_max_length, model.max_sequence_length
    elif model.family == "flux":
        tokenizer, length = model.tokenizer_2, model.max_sequence_length
    for row, prompt in enumerate(("red circle", "a blue cat")):
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        words = [t for t in tokenizer(prompt).input_ids if t not in special]
        padded = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
        expected = [offset + i for i, t in enumerate(padded) if t in words]
        assert weights[row].nonzero().flatten().tolist() == expected and len(expected) >= len(words) > 0
