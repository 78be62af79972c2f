"""Chroma in the pack, on a tiny Chroma built in ComfyUI's own classes: exact reconstruction, prompts
of different token counts stacked by padding with a text mask (a padded row's estimate is its own),
M¹ from the double blocks' kernel calls with that mask, and the concept's tokens in T5."""

from __future__ import annotations

import pytest
import torch

from .comfy_env import require_comfyui

require_comfyui()

import comfy.supported_models  # noqa: E402
from leditspp_comfy import text  # noqa: E402
from leditspp_comfy.denoiser import ComfyDenoiser  # noqa: E402

from leditspp.errors import LeditsError  # noqa: E402
from leditspp.models.base import Conditioning  # noqa: E402
from leditspp.solvers import FlowPath, NoiseLevel  # noqa: E402

from . import tiny  # noqa: E402
from .test_pack import concept, edit, invert  # noqa: E402

SHORT, LONG = "a red hat", "a photo of a cat sitting on a wooden chair"


@pytest.fixture(scope="module")
def chroma():
    model, clip = tiny.tiny_chroma()
    return model, clip, tiny.tiny_vae(channels=16)


def level(rows: int) -> NoiseLevel:
    return NoiseLevel(torch.full((rows,), 500.0), torch.full((rows,), 0.5), torch.full((rows,), 0.5))


def latents(rows: int) -> torch.Tensor:
    return torch.randn(rows, 16, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_chroma_reconstructs_exactly_and_edits_with_its_joint_attention_mask(chroma, solver, steps):
    model, clip, vae = chroma
    image = tiny.image(seed=steps)
    inversion = invert(chroma, steps=steps, solver=solver, image=image, source_text=LONG if steps == 2 else "")
    assert torch.equal(edit(model, inversion)[0], vae.encode(image))
    latent, masks = edit(model, inversion, concept(clip, SHORT))
    assert not torch.equal(latent, vae.encode(image)) and masks.any()


def test_chroma_edits_where_its_concept_mask_is(chroma):
    """The edit moves the latents where the concept's mask acted (at some step) far more than
    where it never did."""
    model, clip, vae = chroma
    inversion = invert(chroma, steps=4)
    latent, masks = edit(model, inversion, concept(clip, SHORT, threshold=0.7, scale=8.0))
    change = (latent - vae.encode(tiny.image())).abs().mean(dim=1)[0]  # (8, 8) latent cells
    inside = torch.nn.functional.interpolate(masks[None], size=change.shape, mode="area")[0, 0] > 0
    assert inside.any() and not inside.all()
    assert change[inside].mean() > 3 * change[~inside].mean()


def test_chroma_runs_on_comfyuis_flux_shifted_flow_path(chroma):
    assert ComfyDenoiser.of(chroma[0]).path == FlowPath(dynamic=True, mu=1.15)


def test_a_padded_prompt_with_its_text_mask_keeps_its_own_estimate(chroma):
    """ComfyUI's Chroma text has no padding; stacked with a longer prompt, a prompt is padded and
    its pads masked, so its row's estimate is the unpadded one's (fp32 noise), while the same
    pads left unmasked change it."""
    model, clip, _ = chroma
    denoiser = ComfyDenoiser.of(model)
    short, long = text.encode(clip, SHORT), text.encode(clip, LONG)
    assert short.embeds.shape[1] < long.embeds.shape[1]
    padded = text.pad_to_common_length([short, long])
    assert padded[0].get("mask")[0].tolist() == [1.0] * short.embeds.shape[1] + [0.0] * (
        long.embeds.shape[1] - short.embeds.shape[1]
    )
    own = torch.cat([denoiser.estimate(latents(2)[i : i + 1], level(1), c) for i, c in enumerate((short, long))])
    stacked = denoiser.estimate(latents(2), level(2), Conditioning.cat(padded))
    torch.testing.assert_close(stacked, own, rtol=1e-5, atol=1e-6)
    unmasked = denoiser.estimate(latents(1), level(1), Conditioning.of(padded[0].embeds))
    assert (unmasked - own[:1]).abs().max() > 1e-3


def test_chroma_attention_mask_is_the_joint_softmax_over_each_rows_own_text(chroma):
    """M¹ is the image queries' softmax over [text; image] keys of the double block's kernel call
    (the single block's is left out), summed over the concept's T5 tokens: for a padded row, over
    its own text keys only (the pads masked as the kernel masks them)."""
    model, clip, _ = chroma
    seen = []

    def recording(func, q, k, v, heads, **kwargs):
        seen.append((q, k))
        return func(q, k, v, heads, **kwargs)

    model = model.clone()
    model.model_options["transformer_options"] = {"optimized_attention_override": recording}
    denoiser = ComfyDenoiser.of(model)
    conds = [text.encode(clip, SHORT), text.encode(clip, LONG)]
    cond = Conditioning.cat(text.pad_to_common_length(conds))
    positions = list(text.token_positions(clip, SHORT))
    tokens = cond.embeds.shape[1]
    weights = torch.zeros(2, tokens)
    weights[:, positions] = 1.0
    with denoiser.capture_attention() as recorder:
        recorder.arm(slice(0, None), weights)
        denoiser.estimate(latents(2), level(2), cond)
        got = recorder.take((4, 4))
    assert len(seen) == 2  # the double block's kernel call, then the single block's
    q, k = seen[0]
    maps = []
    for row, own in enumerate(c.embeds.shape[1] for c in conds):
        keys = torch.cat([k[row, :, :own], k[row, :, tokens:]], dim=1)
        probs = torch.softmax(q[row, :, tokens:] @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        maps.append(probs[..., positions].sum(-1).mean(0))
    expected = torch.stack(maps).view(2, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_chroma_concept_tokens_are_t5s(chroma):
    """A concept's tokens are its T5 word pieces (no start token); ComfyUI does not pad, and the
    pads a T5TokenizerOptions node asks for stay in the encoding and out of the concept's tokens."""
    _, clip, _ = chroma
    pieces = clip.tokenizer.clip_t5xxl.tokenizer(SHORT)["input_ids"][:-1]  # T5's own, without its end token
    assert text.token_positions(clip, SHORT) == tuple(range(len(pieces)))
    assert text.encode(clip, SHORT).embeds.shape[1] == len(pieces) + 1
    padded = clip.clone()
    padded.set_tokenizer_option("t5xxl_min_padding", 2)
    assert text.token_positions(padded, SHORT) == tuple(range(len(pieces)))
    assert text.encode(padded, SHORT).embeds.shape[1] == len(pieces) + 3


def test_an_unsupported_model_is_refused_with_chroma_among_the_supported():
    model, _ = tiny.tiny_chroma()
    model.model.model_config = comfy.supported_models.ChromaRadiance(dict(tiny.TINY_CHROMA))
    with pytest.raises(LeditsError, match=r"loaded as ChromaRadiance; supported: .*Chroma \(Chroma\)"):
        ComfyDenoiser.of(model)
