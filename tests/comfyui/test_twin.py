"""The same edit through the pack and through leditspp's own diffusers adapter, on twin weights
(a tiny ComfyUI SD 1.x model and its diffusers conversion), agrees to fp32 noise: the noise path,
the estimate, the attention layers and the concept's tokens all match leditspp's."""

from __future__ import annotations

import torch

from .comfy_env import require_comfyui

ROOT = require_comfyui()

import comfy.utils  # noqa: E402
from leditspp_comfy.denoiser import comfy_adapter  # noqa: E402
from leditspp_comfy.nodes import LeditsConcept, LeditsEdit, LeditsInvert  # noqa: E402

from leditspp.editor import Editor  # noqa: E402
from leditspp.edits import Edit  # noqa: E402
from leditspp.inversion import Inversion, invert_latents  # noqa: E402
from leditspp.models.autoencoder import ScaledVAE  # noqa: E402
from leditspp.models.sd import ClipText, StableDiffusion  # noqa: E402
from leditspp.models.unet import UNetDenoiser  # noqa: E402
from leditspp.models.unet_attention import UNetTap  # noqa: E402
from leditspp.solvers import NoisePath, step_table  # noqa: E402

from . import tiny  # noqa: E402

SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


def diffusers_unet(patcher):
    """The diffusers ``UNet2DConditionModel`` with the weights of ComfyUI's tiny UNet."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    comfy_sd = patcher.model.diffusion_model.state_dict()
    names = comfy.utils.unet_to_diffusers(patcher.model.model_config.unet_config)
    unet.load_state_dict({d: comfy_sd[c] for d, c in names.items() if c in comfy_sd}, strict=True)
    return unet.eval()


def hf_text_encoder(clip):
    """transformers' ``CLIPTextModel`` and tokenizer with the tiny ComfyUI CLIP's weights and vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(ROOT / "comfy" / "sd1_tokenizer"), model_max_length=77)
    config = CLIPTextConfig(**tiny.TINY_CLIP, vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")
    encoder = CLIPTextModel(config).eval()
    own = clip.cond_stage_model.clip_l.transformer.state_dict()
    weights = {k.removeprefix("text_model."): v for k, v in own.items() if k.startswith("text_model.")}
    encoder.load_state_dict(weights, strict=True)
    return encoder, tokenizer


def test_the_pack_and_leditspp_agree_on_twin_weights():
    unet, clip, vae = tiny.tiny_model(), tiny.tiny_clip(), tiny.tiny_vae()
    image = tiny.image(seed=9)
    steps = {"steps": 4, "skip": 0.15, "seed": 0, "solver": "dpmsolver++", "source_guidance": 3.5}
    inversion = LeditsInvert().invert(unet, vae, clip, image, **steps)[0]
    edit = {"direction": "add", "scale": 6.0, "threshold": 0.5, "warmup": 0, "cooldown": 0}
    concepts = LeditsConcept().concept(clip, "a red hat", **edit)[0]
    packed = LeditsEdit().edit(unet, inversion, "intersect", -1, concepts=concepts)[0]["samples"]

    encoder, tokenizer = hf_text_encoder(clip)
    path = NoisePath.from_scheduler_config(SCHEDULE)
    network = diffusers_unet(unet)
    sd = StableDiffusion(
        text=ClipText(tokenizer=tokenizer, text_encoder=encoder),
        denoiser=UNetDenoiser(unet=network, path=path),
        autoencoder=ScaledVAE(None),
        attention=UNetTap(network),
    )
    editor = Editor(sd)
    x0 = inversion.inversion.source_latents
    table = step_table("dpmsolver++", path, 4, 0.15)
    generator = torch.Generator().manual_seed(0)
    ys, denoised, zs = invert_latents(sd, x0, table, [sd.unconditional("", 1)], 3.5, generator, chunk=4)
    info = inversion.inversion.info.__class__(**{**vars(inversion.inversion.info), "model": editor.fingerprint})
    own = Inversion(ys, denoised, zs, table.timesteps, x0, info)
    result = editor.edit(own, Edit("a red hat", scale=6.0, threshold=0.5), decode=False)

    torch.testing.assert_close(inversion.inversion.denoised, denoised, rtol=1e-4, atol=1e-5)
    assert torch.equal(inversion.inversion.timesteps, table.timesteps)
    assert comfy_adapter(unet).path.spacing == path.spacing
    theirs = unet.model.process_latent_out(result.latents)
    torch.testing.assert_close(packed, theirs, rtol=1e-3, atol=5e-4)  # fp32 noise through 4 guided steps
    assert (theirs - inversion.latent).abs().max() > 0.5, "the edit must be far larger than the tolerance"
