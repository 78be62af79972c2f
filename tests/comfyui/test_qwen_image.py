"""Qwen-Image in the pack, on a tiny model and a tiny Qwen2.5-VL built in ComfyUI's own classes
(with Qwen-Image's Wan 2.1 VAE): exact reconstruction on ComfyUI's flow path, the concept's tokens
inside the chat template, prompts of different lengths stacked with a text mask, M¹ from the
blocks' kernel calls, and the same edit through leditspp's own adapter on twin weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .comfy_env import require_comfyui

require_comfyui()

import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow  # noqa: E402
from leditspp_comfy import run, text  # noqa: E402
from leditspp_comfy.denoiser import comfy_adapter  # noqa: E402

from leditspp.editing import EditSettings, edit_loop  # noqa: E402
from leditspp.errors import LeditsError  # noqa: E402
from leditspp.models.autoencoder import ScaledVAE  # noqa: E402
from leditspp.models.base import Conditioning  # noqa: E402
from leditspp.models.capture import KernelTap, text_first  # noqa: E402
from leditspp.models.qwenimage import DROP, TEMPLATE, QwenImage, QwenImageTransformer, QwenVLText  # noqa: E402
from leditspp.models.sd3 import joint_blocks  # noqa: E402
from leditspp.solvers import FlowPath, NoiseLevel  # noqa: E402

from . import tiny  # noqa: E402
from .test_pack import concept, edit, invert  # noqa: E402


@pytest.fixture(scope="module")
def qwen():
    model, clip = tiny.tiny_qwen_image()
    return model, clip, tiny.wan_vae()


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [1, 3])
def test_qwen_image_reconstructs_exactly_without_a_concept(qwen, solver, steps):
    """Bit for bit the Wan VAE's latent of each image (B, 16, 1, h, w: a batch is encoded image by
    image, not as the frames of one video); with a source prompt longer than c_∅ the two base rows
    are stacked padded."""
    model, _, vae = qwen
    batch = 2 if steps == 3 else 1
    image = tiny.image(seed=steps, batch=batch)
    inversion = invert(qwen, steps=steps, solver=solver, image=image, source_text="a photo" if steps == 3 else "")
    latent, masks = edit(model, inversion)
    assert latent.shape == (batch, 16, 1, 8, 8)
    assert torch.equal(latent, torch.cat([vae.encode(one) for one in image.split(1)]))
    assert masks.shape == (batch, 64, 64) and not masks.any()


def test_a_vae_without_a_frame_axis_gives_its_latent_back_in_its_own_shape(qwen):
    """A 16-channel image VAE's latent (B, 16, h, w) gets the frame axis only inside the model (as
    ComfyUI's samplers add it) and comes back 4-D, exactly."""
    model, clip, _ = qwen
    vae = tiny.tiny_vae(channels=16)
    inversion = invert((model, clip, vae), steps=2)
    assert torch.equal(edit(model, inversion)[0], vae.encode(tiny.image()))
    latent, _ = edit(model, inversion, concept(clip, "a red hat"))
    assert latent.shape == (1, 16, 8, 8) and not torch.equal(latent, vae.encode(tiny.image()))


def test_qwen_image_runs_on_comfyuis_flow_shift_and_on_a_shift_node(qwen):
    """Its own sampling is ComfyUI's ModelSamplingFlux with μ = 1.15; ComfyUI's Qwen-Image workflows
    set a static shift with ModelSamplingAuraFlow, which reconstructs exactly too."""
    model, _, vae = qwen
    assert comfy_adapter(model).path == FlowPath(dynamic=True, mu=1.15)
    shifted = ModelSamplingAuraFlow().patch_aura(model, 3.1)[0]
    assert comfy_adapter(shifted).path == FlowPath(shift=3.1)
    inversion = invert(qwen, model=shifted, steps=3)
    assert torch.equal(edit(shifted, inversion)[0], vae.encode(tiny.image()))


def test_qwen_image_concept_tokens_are_the_prompts_inside_the_template(qwen):
    """ComfyUI drops the chat template's prefix (the same 34 tokens as the diffusers pipeline);
    the concept's tokens are the prompt's own, counted from there: those whose characters lie in
    the prompt, by the tokenizer's offsets."""
    _, clip, _ = qwen
    assert clip.tokenizer.llama_template == TEMPLATE
    tokenizer = clip.tokenizer.qwen25_7b.tokenizer
    for prompt in ("a red hat", "sunglasses, a beard", "A cat"):
        full = tokenizer(TEMPLATE.format(prompt), return_offsets_mapping=True)
        start = TEMPLATE.index("{}")
        inside = [i for i, (a, b) in enumerate(full["offset_mapping"]) if a >= start and b <= start + len(prompt)]
        length = text.encode(clip, prompt).embeds.shape[1]
        assert len(full["input_ids"]) - length == DROP
        assert text.token_positions(clip, prompt) == tuple(i - DROP for i in inside)
        assert text.token_positions(clip, prompt, length) == tuple(i - DROP for i in inside)
    assert text.token_positions(clip, "a red hat") == (0, 1, 2)


def test_prompts_of_different_lengths_stack_with_a_text_mask(qwen):
    """A row zero-padded to a longer prompt's count computes, stacked with it, the estimate it gives
    alone (the kernel masks its padded keys; the text's rotary positions do not move); unmasked,
    the padding would change it."""
    model, clip, _ = qwen
    denoiser = comfy_adapter(model)
    short, long = text.encode(clip, ""), text.encode(clip, "a photo of a cat wearing a red hat")
    padded = text.pad_to_common_length([short, long])
    assert padded[0].get("mask").sum() == short.embeds.shape[1] < padded[0].embeds.shape[1]
    assert padded[1].get("mask").all() and torch.equal(padded[1].embeds, long.embeds)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(torch.tensor([500.0] * 2), torch.tensor([0.5] * 2), torch.tensor([0.5] * 2))
    first = NoiseLevel(*(v[:1] for v in (level.t, level.a, level.s)))
    alone = denoiser.estimate(x[:1], first, short)
    stacked = denoiser.estimate(x, level, Conditioning.cat(padded))
    torch.testing.assert_close(stacked[:1], alone, rtol=1e-5, atol=1e-5)
    unmasked = Conditioning.of(padded[0].embeds, mask=torch.ones_like(padded[0].get("mask")))
    assert (denoiser.estimate(x[:1], first, unmasked) - alone).abs().max() > 1e-2


def test_qwen_image_attention_mask_is_the_joint_softmax_of_each_block(qwen):
    """M¹ is the image queries' softmax over [text; image] keys of each transformer block's kernel
    call with the padded text keys masked, summed over the concept's tokens, averaged over blocks;
    the kernel call passes its mask positionally, which the tap and the mask override keep."""
    model, clip, _ = qwen
    seen = []

    def recording(func, q, k, v, heads, *rest, **kwargs):
        seen.append((q, k, heads, rest, kwargs.get("mask")))
        return func(q, k, v, heads, *rest, **kwargs)

    model = model.clone()
    model.model_options["transformer_options"] = {"optimized_attention_override": recording}
    denoiser = comfy_adapter(model)
    base, hat = text.pad_to_common_length([text.encode(clip, "a photo of a garden"), text.encode(clip, "a red hat")])
    positions = list(text.token_positions(clip, "a red hat"))
    tokens, own = base.embeds.shape[1], int(hat.get("mask").sum())
    weights = torch.zeros(1, tokens)
    weights[0, positions] = 1.0
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(torch.tensor([500.0] * 2), torch.tensor([0.5] * 2), torch.tensor([0.5] * 2))
    with denoiser.capture_attention() as recorder:
        recorder.arm(slice(1, 2), weights)
        denoiser.estimate(x, level, Conditioning.cat([base, hat]))
        got = recorder.take((4, 4))
    assert len(seen) == 2 and all(k.shape[1] == tokens + 16 for _, k, *_ in seen)
    assert all(rest == () and mask.shape == (2, 1, 1, tokens + 16) for *_, rest, mask in seen)
    maps = []
    for q, k, heads, _, _ in seen:
        q, k = (t[1:].unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k))
        kept = torch.cat([k[:, :, :own], k[:, :, tokens:]], dim=2)  # the hat's own tokens and the image
        probs = torch.softmax(q[:, :, tokens:] @ kept.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        maps.append(probs[..., positions].sum(-1).mean(1))
    expected = torch.stack(maps).mean(0).view(1, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_qwen_image_edits_the_concepts_region_more_than_the_rest(qwen):
    """An edit with the attention ∩ noise mask changes the latent where the concept's mask acted
    (at any step) far more than where it never did."""
    model, clip, vae = qwen
    inversion = invert(qwen, steps=4, source_text="a photo")
    latent, masks = edit(model, inversion, concept(clip, "a red hat", scale=8.0, threshold=0.7))
    change = (latent - vae.encode(tiny.image())).abs().mean(dim=(1, 2))[0]  # (h, w)
    region = F.interpolate(masks[None], size=change.shape, mode="area")[0, 0] > 0
    assert 0.1 < region.float().mean() < 0.9
    assert change[region].mean() > 3 * change[~region].mean()


def test_the_refusal_lists_qwen_image():
    pix2pix = tiny.tiny_model()
    pix2pix.model = comfy.supported_models.SD15_instructpix2pix(dict(tiny.TINY_UNET)).get_model({})
    with pytest.raises(LeditsError, match=r"SD15_instructpix2pix.*supported: .*QwenImage \(Qwen-Image\)"):
        comfy_adapter(pix2pix)


def test_the_pack_and_leditspps_adapter_agree_on_twin_weights(qwen):
    """The same edit through the pack and through leditspp's own Qwen-Image adapter on a diffusers
    transformer with the same weights (on the pack's noise path, inversion and conditionings) agrees
    to fp32 noise: the estimates of padded rows, M¹ from the blocks' joint attention, and the
    concept's tokens as the adapter marks them with ComfyUI's tokenizer."""
    from diffusers import QwenImageTransformer2DModel

    model, clip, _ = qwen
    inversion = invert(qwen, steps=3, source_text="a photo")
    concepts = concept(clip, "a red hat", scale=6.0, threshold=0.5)
    packed = edit(model, inversion, concepts)[0]

    transformer = QwenImageTransformer2DModel(**{k: v for k, v in tiny.TINY_QWEN_IMAGE.items() if k != "image_model"})
    transformer.load_state_dict(model.model.diffusion_model.state_dict(), strict=True)
    denoiser = comfy_adapter(model)
    tokenizer = clip.tokenizer.qwen25_7b.tokenizer
    adapter = QwenImage(
        text=QwenVLText(tokenizer=tokenizer, text_encoder=None, max_sequence_length=512),
        denoiser=QwenImageTransformer(transformer=transformer.eval(), path=denoiser.path, patch=2, text_tokens=512),
        autoencoder=ScaledVAE(None),
        attention=KernelTap(transformer, joint_blocks, text_first, 1),
    )
    assert adapter.token_positions("a red hat") == list(concepts[0].positions)
    source = inversion.inversion
    base, batch = run.concept_batch(denoiser, inversion.base, concepts)
    with adapter.capture_attention() as recorder:
        table = run.check_inversion(denoiser, inversion)
        latents = edit_loop(adapter, source, table, base, batch, EditSettings("intersect"), recorder)[0]
    theirs = denoiser.denoiser.latent_out(latents, inversion.latent)
    torch.testing.assert_close(packed, theirs, rtol=1e-3, atol=5e-4)  # fp32 noise through 3 guided steps
    assert (theirs - inversion.latent).abs().max() > 0.5, "the edit must be far larger than the tolerance"
