"""Tiny SD 1.x/2.x, SDXL, SD3, FLUX.1, Chroma and Qwen-Image models in ComfyUI's own classes, from
fixed seeds (no download)."""

from __future__ import annotations

from typing import Any

import torch

#: A 3-level SD 1.x UNet (channels 32/64/64, one res block and one transformer per level) whose
#: mask level 2 (¼ of the latents) has 1 input and 2 output cross-attentions.
TINY_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 2, 2],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "legacy": False,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "context_dim": 32,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 32,
}
TINY_VAE = {
    "embed_dim": 4,
    "ddconfig": {
        "double_z": True,
        "z_channels": 4,
        "resolution": 64,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
}


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter from ``seed``: matrices and kernels N(0, 1/fan-in), norm weights ≈ 1,
    other vectors ≈ 0 (ComfyUI builds its layers uninitialised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.dim() >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(noise * 0.02 + (1.0 if name.endswith("weight") else 0.0))
    return module


#: The families the unit tests build: ComfyUI's model config, its text stack (module, tokenizer,
#: encoder, the text encoders made tiny) and what the UNet needs beside :data:`TINY_UNET` (SD 2.x
#: and SDXL: heads of 64 channels, linear projections; SDXL: CLIP-L + CLIP-G text and the added
#: conditions, 32 pooled + 6 × 256 size embeddings).
FAMILIES = {
    "SD15": ("sd1_clip", "SD1Tokenizer", "SD1ClipModel", ("clip_l",), {}),
    "SD20": (
        "text_encoders.sd2_clip",
        "SD2Tokenizer",
        "SD2ClipModel",
        ("clip_h",),
        {"model_channels": 64, "use_linear_in_transformer": True},
    ),
    "SDXL": (
        "sdxl_clip",
        "SDXLTokenizer",
        "SDXLClipModel",
        ("clip_l", "clip_g"),
        {
            "model_channels": 64,
            "use_linear_in_transformer": True,
            "context_dim": 64,
            "adm_in_channels": 32 + 6 * 256,
            "num_classes": "sequential",
        },
    ),
}


#: A FLUX.1 transformer (one double and one single block, 64 wide) for the tiny CLIP-L + T5 below.
TINY_FLUX = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "vec_in_dim": 32,
    "context_in_dim": 32,
    "hidden_size": 64,
    "mlp_ratio": 2.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [4, 14, 14],
    "theta": 10000,
    "qkv_bias": True,
    "guidance_embed": True,
}
TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}


def tiny_flux(seed: int = 0, variant: str = "Flux") -> tuple[Any, Any]:
    """A ``ModelPatcher`` around a tiny FLUX.1-shaped model (``Flux``: [dev], guidance-distilled;
    ``FluxSchnell``) and its ``CLIP`` (CLIP-L + T5)."""
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.flux
    from comfy.supported_models_base import ClipTarget

    config = {**TINY_FLUX, "guidance_embed": variant == "Flux"}
    model = getattr(comfy.supported_models, variant)(config).get_model({})
    randomize(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    target = ClipTarget(comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip())
    options = {"clip_l_model_config": dict(TINY_CLIP), "t5xxl_model_config": dict(TINY_T5)}
    clip = comfy.sd.CLIP(target, model_options=options)
    randomize(clip.cond_stage_model, seed + 1)
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), clip


#: A Chroma transformer (one double and one single block, 64 wide; a 2-layer modulation
#: approximator) for the tiny T5 above. ComfyUI fixes the approximator's input (64: time, guidance
#: and the modulation index, 16 + 16 + 32) and the packed channels (64 = 16 latent channels × 2×2).
TINY_CHROMA = {
    "image_model": "chroma",
    "in_channels": 64,
    "out_channels": 64,
    "patch_size": 2,
    "context_in_dim": 32,
    "hidden_size": 64,
    "mlp_ratio": 2.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [4, 14, 14],
    "theta": 10000,
    "qkv_bias": True,
    "in_dim": 64,
    "out_dim": 64,
    "hidden_dim": 32,
    "n_layers": 2,
}


def tiny_chroma(seed: int = 0, **config: Any) -> tuple[Any, Any]:
    """A ``ModelPatcher`` around a tiny Chroma model (:data:`TINY_CHROMA`, changed by ``config``) and
    its ``CLIP`` (the T5 ComfyUI gives Chroma: no padding, no attention mask)."""
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.pixart_t5
    from comfy.supported_models_base import ClipTarget

    model = comfy.supported_models.Chroma({**TINY_CHROMA, **config}).get_model({})
    randomize(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    t5 = comfy.text_encoders.pixart_t5
    target = ClipTarget(t5.PixArtTokenizer, t5.pixart_te())
    clip = comfy.sd.CLIP(target, model_options={"t5xxl_model_config": dict(TINY_T5)})
    randomize(clip.cond_stage_model, seed + 1)
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), clip


#: An SD3.5-shaped MMDiT (two joint blocks, 128 wide: ComfyUI fixes 64 channels a block and a head
#: per block; RMS q/k norms; the first block with SD3.5 Medium's extra image self-attention) for the
#: tiny CLIP-L + CLIP-G (32 + 32 pooled) and a T5 as wide as ComfyUI pads the CLIPs (4096).
TINY_MMDIT = {
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "depth": 2,
    "adm_in_channels": 64,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    "pos_embed_max_size": 16,
    "num_patches": 256,
    "qk_norm": "rms",
    "x_block_self_attn_layers": [0],
    "pos_embed_scaling_factor": None,
}
SD3_T5 = {"d_model": 4096, "d_ff": 32, "d_kv": 8, "num_heads": 2, "num_layers": 1}


def tiny_sd3(seed: int = 0, t5: bool = True) -> tuple[Any, Any]:
    """A ``ModelPatcher`` around a tiny SD3.5-shaped model (shift 3) and its ``CLIP`` (CLIP-L, CLIP-G
    and, with ``t5``, a one-layer T5)."""
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.sd3_clip
    from comfy.supported_models_base import ClipTarget

    model = comfy.supported_models.SD3(dict(TINY_MMDIT)).get_model({})
    randomize(model.diffusion_model, seed)
    network = model.diffusion_model  # its position embedding is a buffer, built uninitialised
    network.pos_embed.copy_(torch.randn(network.pos_embed.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    cpu = torch.device("cpu")
    encoder = comfy.text_encoders.sd3_clip.sd3_clip(t5=t5)
    target = ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer, encoder)
    options = {"clip_l_model_config": dict(TINY_CLIP), "clip_g_model_config": dict(TINY_CLIP)}
    clip = comfy.sd.CLIP(target, model_options={**options, "t5xxl_model_config": dict(SD3_T5)})
    randomize(clip.cond_stage_model, seed + 1)
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), clip


#: A Qwen-Image transformer (two blocks, 64 wide, heads of 32 with rotary axes 8 + 12 + 12) on
#: 16-channel latents packed 2×2, reading the 32-wide Qwen2.5-VL below.
TINY_QWEN_IMAGE = {
    "image_model": "qwen_image",
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "axes_dims_rope": (8, 12, 12),
}
#: Qwen2.5-VL's language model made tiny (ComfyUI fixes its heads at 128 channels and its
#: vocabulary at Qwen's 152,064 tokens; ComfyUI's own Qwen2.5 tokenizer is in its tree).
TINY_QWEN25 = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def tiny_qwen_image(seed: int = 0) -> tuple[Any, Any]:
    """A ``ModelPatcher`` around a tiny Qwen-Image model (ComfyUI's flow sampling, shift 1.15) and its
    ``CLIP`` (the tiny Qwen2.5-VL in Qwen-Image's chat template). ComfyUI builds the encoder's vision
    tower at its fixed full size (0.66 B parameters, never filled); text prompts never run it, so it
    is dropped."""
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.qwen_image
    from comfy.supported_models_base import ClipTarget

    model = comfy.supported_models.QwenImage(dict(TINY_QWEN_IMAGE)).get_model({})
    randomize(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    target = ClipTarget(comfy.text_encoders.qwen_image.QwenImageTokenizer, comfy.text_encoders.qwen_image.te())
    clip = comfy.sd.CLIP(target, model_options={"qwen25_7b_model_config": dict(TINY_QWEN25)})
    encoder = clip.cond_stage_model.qwen25_7b.transformer
    del encoder.visual
    randomize(encoder, seed + 1)
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), clip


def wan_vae(seed: int = 2) -> Any:
    """A ComfyUI ``VAE`` of Qwen-Image's kind (Wan 2.1: 16 channels, factor 8, latents with a frame
    axis (B, 16, 1, h, w)) at the width ComfyUI fixes for it (0.13 B parameters)."""
    import comfy.sd

    vae = comfy.sd.VAE(sd={"decoder.middle.0.residual.0.gamma": torch.ones(384, 1, 1, 1)})
    randomize(vae.first_stage_model, seed)
    return vae


def tiny_model(seed: int = 0, family: str = "SD15") -> Any:
    """A ``ModelPatcher`` around a tiny ``BaseModel`` of ``family`` (ε-prediction) on the CPU."""
    import comfy.model_patcher
    import comfy.supported_models

    config = getattr(comfy.supported_models, family)({**TINY_UNET, **FAMILIES[family][4]})
    model = config.get_model({})
    randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_clip(seed: int = 1, family: str = "SD15") -> Any:
    """A ComfyUI ``CLIP`` with ``family``'s tokenizers and 3-layer, 32-wide text encoders."""
    import importlib

    import comfy.sd
    from comfy.supported_models_base import ClipTarget

    module, tokenizer, encoder, names, _ = FAMILIES[family]
    module = importlib.import_module(f"comfy.{module}")
    target = ClipTarget(getattr(module, tokenizer), getattr(module, encoder))
    clip = comfy.sd.CLIP(target, model_options={f"{name}_model_config": dict(TINY_CLIP) for name in names})
    randomize(clip.cond_stage_model, seed)
    return clip


def tiny_vae(seed: int = 2, channels: int = 4) -> Any:
    """A ComfyUI ``VAE`` (factor 8, ``channels`` latent channels, 32 wide)."""
    import comfy.sd

    params = {"embed_dim": channels, "ddconfig": {**TINY_VAE["ddconfig"], "z_channels": channels}}
    vae = comfy.sd.VAE(sd={}, config={"params": params})
    randomize(vae.first_stage_model, seed)
    return vae


def image(seed: int = 3, size: int = 64, batch: int = 1) -> torch.Tensor:
    """A smooth random ComfyUI ``IMAGE`` (B, H, W, 3) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").movedim(1, -1)


#: The smallest UNet ComfyUI still detects as SD 1.x: SD 1.5's widths (320 channels, 768-wide text)
#: are what its detection matches on, so only the depth shrinks (3 levels, one block each).
CHECKPOINT_UNET = {**TINY_UNET, "model_channels": 320, "channel_mult": [1, 1, 1], "context_dim": 768}
#: SD 1.x's VAE as ComfyUI detects it from a checkpoint (128 wide, factor 8).
CHECKPOINT_VAE = {
    "embed_dim": 4,
    "ddconfig": {**TINY_VAE["ddconfig"], "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2},
}


def half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with its floating-point tensors in fp16, contiguous (as checkpoints are shared)."""
    return {k: v.half().contiguous() if v.is_floating_point() else v for k, v in sd.items()}


def write_checkpoint(path: str, seed: int = 0, family: str = "SD15") -> None:
    """A ComfyUI-loadable single-file checkpoint (fp16) of ``family``, random from ``seed``: the
    UNet above (SD15, ~0.4 GB) or below (SDXL, ~2 GB), the text encoders at the sizes ComfyUI fixes
    for the family (SD 1.x: CLIP-L; SDXL: CLIP-L and CLIP-G) and SD's VAE."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.utils
    from comfy.supported_models_base import ClipTarget

    unet, target = {
        "SD15": (CHECKPOINT_UNET, ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)),
        "SDXL": (CHECKPOINT_SDXL_UNET, ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)),
    }[family]
    model = getattr(comfy.supported_models, family)(dict(unet)).get_model({})
    randomize(model.diffusion_model, seed)
    clip = comfy.sd.CLIP(target)
    randomize(clip.cond_stage_model, seed + 1)
    vae = comfy.sd.VAE(sd={}, config={"params": CHECKPOINT_VAE})
    randomize(vae.first_stage_model, seed + 2)
    sd = model.state_dict_for_saving(half(clip.get_sd()), half(vae.get_sd()))
    comfy.utils.save_torch_file(half(sd), path)


#: The smallest UNet ComfyUI still detects as SDXL: it matches SDXL's widths (320 channels, 2048-wide
#: text, 2816 added conditions) and its input blocks' transformer depths (0, 0, 2, 2, 10, 10); the
#: levels stay 320 wide and the middle and output blocks hold one transformer each where SDXL's do.
CHECKPOINT_SDXL_UNET = {
    **TINY_UNET,
    **FAMILIES["SDXL"][4],
    "model_channels": 320,
    "channel_mult": [1, 1, 1],
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 2048,
    "adm_in_channels": 2816,
}
#: The smallest FLUX.1 [dev] ComfyUI detects: its widths are fixed (3072 wide, 24 heads, 4096-wide T5
#: text, CLIP-L's 768-wide pooled vector), the depth is not (one double and one single block, ~0.5 B
#: parameters).
CHECKPOINT_FLUX = {
    **TINY_FLUX,
    "vec_in_dim": 768,
    "context_in_dim": 4096,
    "hidden_size": 3072,
    "mlp_ratio": 4.0,
    "num_heads": 24,
    "axes_dim": [16, 56, 56],
}
#: ``model_options`` for ComfyUI's FLUX.1 text stack (CLIP-L and T5) with a one-layer T5 as wide as
#: FLUX.1 reads it: ComfyUI's loaders fix T5-XXL's size (4.8 B parameters; CLIP-L's is 0.1 B).
FLUX_TEXT_OPTIONS = {"t5xxl_model_config": SD3_T5}


def write_flux(unet: str, clip_l: str, t5: str, vae: str, seed: int = 0) -> None:
    """The files a FLUX.1 graph loads (fp16), random from ``seed``: the diffusion model
    (:data:`CHECKPOINT_FLUX`, for ``UNETLoader``, ~1 GB), CLIP-L and the T5 of
    :data:`FLUX_TEXT_OPTIONS` and FLUX.1's autoencoder layout (no quant convs, 16 latent channels,
    for ``VAELoader``)."""
    import comfy.sd
    import comfy.supported_models
    import comfy.text_encoders.flux
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    from comfy.supported_models_base import ClipTarget

    model = comfy.supported_models.Flux(dict(CHECKPOINT_FLUX)).get_model({})
    comfy.utils.save_torch_file(half(randomize(model.diffusion_model, seed).state_dict()), unet)
    del model
    target = ClipTarget(comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip())
    clip = comfy.sd.CLIP(target, model_options=FLUX_TEXT_OPTIONS)
    randomize(clip.cond_stage_model, seed + 1)
    for path, name in ((clip_l, "clip_l"), (t5, "t5xxl")):
        sd = half(getattr(clip.cond_stage_model, name).state_dict())
        comfy.utils.save_torch_file({k.removeprefix("transformer."): v for k, v in sd.items()}, path)
    ddconfig = {**CHECKPOINT_VAE["ddconfig"], "z_channels": 16}
    engine = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig},
    )
    comfy.utils.save_torch_file(half(randomize(engine, seed + 2).state_dict()), vae)


def tap_and_kernel_calls(
    model: Any, clip: Any, x: torch.Tensor, level: Any, grid: tuple[int, int], prompt: str = "a red hat"
) -> tuple[torch.Tensor, list[tuple], int, tuple[int, ...]]:
    """One estimate of ``model`` on latents ``x`` (B, C, h, w) at ``level`` with the pack's attention
    tap armed on ``prompt``'s tokens, every kernel call recorded by an override set before the pack's
    (which calls it in turn). Returns the tap's M¹ (B, *grid), the calls' (q, k, heads, block), the
    text token count and the concept's token positions."""
    from leditspp_comfy import text
    from leditspp_comfy.denoiser import comfy_adapter

    calls: list[tuple] = []

    def recording(func, q, k, v, heads, **kwargs):
        calls.append((q, k, heads, kwargs.get("transformer_options", {}).get("block")))
        return func(q, k, v, heads, **kwargs)

    model = model.clone()
    model.model_options["transformer_options"] = {"optimized_attention_override": recording}
    denoiser = comfy_adapter(model)
    cond = text.encode(clip, prompt)
    positions = tuple(text.token_positions(clip, prompt))
    weights = torch.zeros(1, cond.embeds.shape[1])
    weights[0, list(positions)] = 1.0
    with denoiser.capture_attention() as recorder:
        recorder.arm(slice(0, None), weights)
        denoiser.estimate(x, level, cond)
        got = recorder.take(grid)
    return got, calls, cond.embeds.shape[1], positions


def kernel_mask(
    q: torch.Tensor, k: torch.Tensor, heads: int, positions: tuple[int, ...], text_tokens: int = 0
) -> torch.Tensor:
    """A direct softmax of one kernel call's q and k: the image queries' (those after the first
    ``text_tokens``) attention over all keys, summed over the concept's key ``positions`` and
    averaged over heads, (B, image tokens). q, k: (B, L, heads·d), or (B, heads, L, d) as FLUX's
    calls pass them."""
    if q.dim() == 3:
        q, k = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k))
    probs = torch.softmax(q[:, :, text_tokens:] @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return probs[..., list(positions)].sum(-1).mean(1)
