"""The pack on tiny SD 1.x models built in ComfyUI's own classes: exact reconstruction, M¹ from
ComfyUI's attention hook, LoRA-patched weights, refusals, progress and Cancel."""

from __future__ import annotations

import pytest
import torch

from .comfy_env import require_comfyui

require_comfyui()

import comfy.model_management  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete  # noqa: E402
from leditspp_comfy import run, text  # noqa: E402
from leditspp_comfy.denoiser import comfy_adapter  # noqa: E402
from leditspp_comfy.nodes import LeditsConcept, LeditsEdit, LeditsInvert  # noqa: E402

from leditspp.errors import LeditsError  # noqa: E402
from leditspp.solvers import NoiseLevel  # noqa: E402

from . import tiny  # noqa: E402


@pytest.fixture(scope="module")
def parts():
    return tiny.tiny_model(), tiny.tiny_clip(), tiny.tiny_vae()


def invert(parts, model=None, steps=3, solver="dpmsolver++", image=None, **options):
    unet, clip, vae = parts
    image = tiny.image() if image is None else image
    options = {"steps": steps, "skip": 0.15, "seed": 0, "solver": solver, "source_guidance": 3.5, **options}
    return LeditsInvert().invert(model or unet, vae, clip, image, **options)[0]


def concept(clip, prompt="a red hat", concepts=(), **options):
    values = {"direction": "add", "scale": 5.0, "threshold": 0.5, "warmup": 0, "cooldown": 0, **options}
    return LeditsConcept().concept(clip, prompt, concepts=concepts, **values)[0]


def edit(model, inversion, concepts=(), mask_mode="intersect", preserve=-1, mask=None):
    latent, masks = LeditsEdit().edit(model, inversion, mask_mode, preserve, concepts=concepts, mask=mask)
    return latent["samples"], masks


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_no_concept_gives_the_vae_latent_bit_for_bit(parts, solver, steps):
    unet, _, vae = parts
    image = tiny.image(seed=steps)
    inversion = invert(parts, steps=steps, solver=solver, image=image, source_text="a photo" if steps == 2 else "")
    latent, masks = edit(unet, inversion)
    assert torch.equal(latent, vae.encode(image))
    assert masks.shape == (1, 64, 64) and not masks.any()


@pytest.mark.parametrize("family", ["SD20", "SDXL"])
def test_other_unet_families_reconstruct_exactly_and_edit_with_their_attention_mask(parts, family):
    _, _, vae = parts
    model, clip = tiny.tiny_model(family=family), tiny.tiny_clip(family=family)
    inversion = invert((model, clip, vae), steps=3, source_text="a photo")
    assert torch.equal(edit(model, inversion)[0], vae.encode(tiny.image()))
    latent, masks = edit(model, inversion, concept(clip, "a red hat"))
    assert not torch.equal(latent, vae.encode(tiny.image())) and masks.any()


@pytest.mark.parametrize(("variant", "solver"), [("Flux", "dpmsolver++"), ("FluxSchnell", "ddpm")])
def test_flux_reconstructs_exactly_and_edits_with_its_joint_attention_mask(variant, solver):
    model, clip = tiny.tiny_flux(variant=variant)
    vae = tiny.tiny_vae(channels=16)
    inversion = invert((model, clip, vae), steps=3, solver=solver)
    assert torch.equal(edit(model, inversion)[0], vae.encode(tiny.image()))
    latent, masks = edit(model, inversion, concept(clip, "a red hat"))
    assert not torch.equal(latent, vae.encode(tiny.image())) and masks.any()
    pieces = clip.tokenizer.t5xxl.tokenizer("a red hat")["input_ids"][:-1]  # T5's own, without its end token
    assert text.token_positions(clip, "a red hat") == tuple(range(len(pieces)))  # and no start token


def test_long_prompts_of_several_chunks_invert_and_edit(parts):
    """A source prompt and a concept longer than one 77-token chunk stack with the 77-token c_∅."""
    unet, clip, vae = parts
    long = "a photo of " + "a very detailed red hat, " * 20
    inversion = invert(parts, steps=2, source_text=long)
    assert inversion.base[1].embeds.shape[1] == 154
    assert torch.equal(edit(unet, inversion)[0], vae.encode(tiny.image()))
    latent, masks = edit(unet, inversion, concept(clip, long) + concept(clip, "a hat"))
    assert torch.isfinite(latent).all() and masks.shape == (2, 64, 64)


def test_a_source_conditioning_inverts_as_the_same_source_text(parts):
    """The source prompt as a CONDITIONING (what CLIPTextEncode gives) wins over the text and
    inverts exactly as that text does."""
    _, clip, _ = parts
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a photo"), return_pooled=True)
    given = invert(parts, steps=2, source=[[cond, {"pooled_output": pooled}]], source_text="ignored")
    typed = invert(parts, steps=2, source_text="a photo")
    assert torch.equal(given.inversion.noise_maps, typed.inversion.noise_maps)
    assert given.inversion.info.source_prompt == "(the source conditioning)"
    with pytest.raises(LeditsError, match="source must be one text conditioning"):
        invert(parts, steps=2, source=[[cond, {}], [cond, {}]])


def test_the_latent_comes_back_as_the_user_gave_it(parts):
    """ComfyUI's latent scaling does not round-trip: mapping the model-space x0 back differs from
    the VAE's latent, so the pack must hand back the user's own latent."""
    unet, _, vae = parts
    latent = vae.encode(tiny.image(seed=7, batch=2))
    model = unet.model
    assert not torch.equal(model.process_latent_out(model.process_latent_in(latent)), latent)


def test_v_prediction_reconstructs_exactly(parts):
    unet, _, vae = parts
    v_model = ModelSamplingDiscrete().patch(unet, "v_prediction", False)[0]
    inversion = invert(parts, model=v_model, steps=4)
    assert torch.equal(edit(v_model, inversion)[0], vae.encode(tiny.image()))


def test_a_concept_edits_and_every_cell_can_change(parts):
    unet, clip, vae = parts
    inversion = invert(parts, steps=4)
    concepts = concept(clip, "a red hat", threshold=0.0)
    latent, masks = edit(unet, inversion, concepts, mask_mode="none")
    source = vae.encode(tiny.image())
    assert torch.isfinite(latent).all() and latent.shape == source.shape
    assert (latent != source).float().mean() > 0.9
    assert masks.shape == (1, 64, 64)


def test_concepts_chain_and_nodes_never_change_their_inputs(parts):
    unet, clip, _ = parts
    inversion = invert(parts, steps=3)
    first = concept(clip, "a red hat")
    both = concept(clip, "a beard", concepts=first, direction="remove", warmup=1)
    assert len(first) == 1 and len(both) == 2 and both[0] is first[0]
    saved = {name: getattr(inversion.inversion, name).clone() for name in ("noisy_latents", "noise_maps")}
    latent_before = inversion.latent.clone()
    one, masks = edit(unet, inversion, both)
    two, _ = edit(unet, inversion, both)
    assert torch.equal(one, two) and masks.shape == (2, 64, 64)
    assert all(torch.equal(getattr(inversion.inversion, n), t) for n, t in saved.items())
    assert torch.equal(inversion.latent, latent_before)


def test_preserve_keeps_the_user_latent_outside_the_region(parts):
    unet, clip, vae = parts
    inversion = invert(parts, steps=3)
    mask = torch.zeros(1, 64, 64)
    mask[:, :32, :32] = 1.0
    latent, _ = edit(unet, inversion, concept(clip, threshold=0.9), mask_mode="noise", preserve=0, mask=mask)
    source = vae.encode(tiny.image())
    assert torch.equal(latent[..., 4:, :], source[..., 4:, :]) and torch.equal(latent[..., :, 4:], source[..., :, 4:])
    assert not torch.equal(latent[..., :4, :4], source[..., :4, :4])


def test_attention_mask_is_the_softmax_of_the_kernels_q_and_k(parts):
    """M¹ from the tap equals a direct softmax of the q and k the kernel received."""
    unet, clip, _ = parts
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(torch.tensor([500.0]), torch.tensor([0.6]), torch.tensor([0.8]))
    got, calls, _, positions = tiny.tap_and_kernel_calls(unet, clip, x, level, (2, 2))
    assert positions == (1, 2, 3)
    cross = [(q, k, h) for q, k, h, block in calls if k.shape[1] == 77 and q.shape[1] == 4 and block[0] != "middle"]
    assert len(cross) == 3
    expected = torch.stack([tiny.kernel_mask(q, k, h, positions) for q, k, h in cross]).mean(0).view(1, 2, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_flux_attention_mask_is_the_joint_softmax_of_its_double_block():
    """On FLUX.1, M¹ is the image queries' joint softmax over [text; image] keys of the double block
    (its first kernel call; the single block's is left out), summed over the concept's T5 tokens."""
    model, clip = tiny.tiny_flux()
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(torch.tensor([500.0]), torch.tensor([0.5]), torch.tensor([0.5]))
    got, calls, tokens, positions = tiny.tap_and_kernel_calls(model, clip, x, level, (4, 4))
    assert len(calls) == 2  # the double block's kernel call, then the single block's
    q, k, heads, _ = calls[0]
    expected = tiny.kernel_mask(q, k, heads, positions, tokens).view(1, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_a_lora_patched_model_edits_with_the_patched_weights(parts):
    unet, clip, _ = parts
    key = "diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"
    delta = torch.randn(unet.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5)) * 0.5
    patched = unet.clone()
    patched.add_patches({key: (delta,)})
    twin = tiny.tiny_model()
    with torch.no_grad():
        twin.model.state_dict()[key].add_(delta)
    concepts = concept(clip, "a red hat")
    results = []
    for model in (patched, twin, unet):
        results.append(edit(model, invert(parts, model=model, steps=3), concepts)[0])
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_models_it_cannot_edit_are_refused_by_name(parts):
    unet, _, _ = parts
    x0_model = ModelSamplingDiscrete().patch(unet, "x0", False)[0]
    with pytest.raises(LeditsError, match="predicts with X0"):
        comfy_adapter(x0_model)
    pix2pix = unet.clone()
    pix2pix.model = comfy.supported_models.SD15_instructpix2pix(dict(tiny.TINY_UNET)).get_model({})
    with pytest.raises(LeditsError, match=r"SD15_instructpix2pix.*supported: SD15"):
        comfy_adapter(pix2pix)


def test_progress_advances_per_step_and_cancel_stops(parts):
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        invert(parts, steps=3)
        assert calls[-1] == (3, 3)
        comfy.model_management.interrupt_current_processing(True)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            invert(parts, steps=3)
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(None)


def test_bad_values_name_the_input_and_the_fix(parts):
    _, clip, _ = parts
    with pytest.raises(LeditsError, match="text is empty"):
        concept(clip, "  ")
    with pytest.raises(LeditsError, match="cooldown"):
        concept(clip, "hat", warmup=3, cooldown=2)
    with pytest.raises(LeditsError, match="multiples of 32"):
        invert(parts, image=tiny.image(size=48))
    assert run.check_size(64, 96, 32) is None
