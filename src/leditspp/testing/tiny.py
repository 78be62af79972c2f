"""Tiny, random-weight SD 1.x/2.x, SDXL, SD3/3.5 and FLUX.1 components and pipelines, built from configs.

Each builder seeds inside :func:`seeded` (``torch.random.fork_rng``), one seed per network at a
fixed offset from ``seed``, so the weights are the same every time and the caller's global RNG is
left as it was. Tokenizers come from :mod:`leditspp.testing.tokenizers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ..demo import SD_SCHEDULE


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG with ``seed`` inside the block; the caller's RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def clip_text_encoder(tokenizer: Any, width: int, *, layers: int, heads: int, intermediate: int, **config: Any) -> Any:
    """A randomly initialised CLIP text encoder for ``tokenizer`` (77 positions); with
    ``projection_dim`` in ``config`` the projected variant (SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if "projection_dim" in config else CLIPTextModel
    return cls(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **config,
        )
    )


def t5_text_encoder(tokenizer: Any, width: int, *, layers: int, heads: int, head_dim: int, ff: int) -> Any:
    """A randomly initialised ``T5EncoderModel`` for ``tokenizer``, shaped like T5 v1.1 (gated-GELU
    feed-forward of width ``ff``, untied embeddings, relative position buckets); ``width`` = d_model."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=head_dim,
            d_ff=ff,
            num_layers=layers,
            num_heads=heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            tie_word_embeddings=False,
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def tiny_vae(seed: int, **config: Any) -> Any:
    """A factor-8 ``AutoencoderKL`` (widths 16/16/32/32, 4 latent channels) with random weights;
    ``config`` adds to it or overrides it."""
    from diffusers import AutoencoderKL

    with seeded(seed):
        return AutoencoderKL(
            **{
                "in_channels": 3,
                "out_channels": 3,
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "block_out_channels": (16, 16, 32, 32),
                "latent_channels": 4,
                "norm_num_groups": 8,
                **config,
            }
        )


def tiny_flow_vae(seed: int, *, shift_factor: float, scaling_factor: float) -> Any:
    """:func:`tiny_vae` with 16 latent channels and no quant convolutions, as SD3's and FLUX.1's
    VAEs: latents enter the transformer as ``(z − shift_factor) · scaling_factor``."""
    return tiny_vae(
        seed,
        latent_channels=16,
        sample_size=128,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def eval_mode(components: dict[str, Any]) -> dict[str, Any]:
    """``components`` with every network in eval mode (no dropout), returned for chaining."""
    for value in components.values():
        if isinstance(value, torch.nn.Module):
            value.eval()
    return components


def tiny_sd_components(
    tokenizer: Any, *, seed: int = 0, prediction_type: str = "epsilon", cross_attention_dim: int = 32
) -> dict[str, Any]:
    """SD-1.x-shaped but tiny components (UNet widths 32/32/64/64, VAE factor 8), random weights."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=8,
            norm_num_groups=8,
        )
    vae = tiny_vae(seed + 1, sample_size=256)
    with seeded(seed + 2):
        text_encoder = clip_text_encoder(tokenizer, cross_attention_dim, layers=2, heads=4, intermediate=64)
    scheduler = PNDMScheduler(
        **SD_SCHEDULE,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )
    return eval_mode(
        {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    )


def tiny_sdxl_components(tokenizer: Any, tokenizer_2: Any, *, seed: int = 0) -> dict[str, Any]:
    """SDXL-shaped but tiny components: two CLIP encoders of different widths (32, and 48 with a
    40-dim projection), a 3-level UNet with ``addition_embed_type="text_time"`` (cross-attention
    width 80 = 32 + 48), a factor-8 VAE with ``force_upcast``, and SDXL's Euler scheduler config."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2),
            attention_head_dim=(2, 4, 8),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 40,
            cross_attention_dim=32 + 48,
            norm_num_groups=8,
        )
    vae = tiny_vae(seed + 1, sample_size=128, scaling_factor=0.13025, force_upcast=True)
    with seeded(seed + 2):
        text_encoder = clip_text_encoder(tokenizer, 32, layers=3, heads=4, intermediate=64, hidden_act="gelu")
    with seeded(seed + 3):
        text_encoder_2 = clip_text_encoder(
            tokenizer, 48, layers=3, heads=4, intermediate=96, hidden_act="gelu", projection_dim=40
        )
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading")
    return eval_mode(
        {
            "unet": unet,
            "vae": vae,
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "scheduler": scheduler,
        }
    )


def tiny_sdxl_pipeline(tokenizer: Any, tokenizer_2: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusionXLPipeline`` around :func:`tiny_sdxl_components` (no watermarker)."""
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**tiny_sdxl_components(tokenizer, tokenizer_2, **kwargs), add_watermarker=False)


def tiny_sd_pipeline(tokenizer: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusionPipeline`` around :func:`tiny_sd_components` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **tiny_sd_components(tokenizer, **kwargs),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


#: The scheduler configs few-step checkpoints ship, on the SD training schedule: SD-Turbo and
#: SDXL-Turbo (Euler, trailing), SDXL-Lightning / Hyper-SD (as their model cards set it: Euler or
#: DDIM, trailing) and LCM (LCMScheduler: 50 original steps, timestep_scaling 10).
FEW_STEP_SCHEDULERS = ("turbo", "lightning", "lcm")


def few_step_scheduler(kind: str) -> Any:
    """The scheduler a few-step checkpoint of ``kind`` (see :data:`FEW_STEP_SCHEDULERS`) ships."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler

    if kind == "turbo":
        return EulerAncestralDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="trailing")
    if kind == "lightning":
        return DDIMScheduler(**SD_SCHEDULE, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    if kind == "lcm":
        return LCMScheduler(**SD_SCHEDULE, original_inference_steps=50, timestep_scaling=10.0)
    raise ValueError(f"unknown few-step kind {kind!r}; one of {FEW_STEP_SCHEDULERS}")


# --- Rectified-flow families (SD3/3.5, FLUX.1) ---------------------------------------------------

#: SD3/3.5's VAE latent normalisation and scheduler (static shift 3).
SD3_VAE_FACTORS = {"shift_factor": 0.0609, "scaling_factor": 1.5305}
SD3_SCHEDULE = {"num_train_timesteps": 1000, "shift": 3.0}

#: FLUX.1's VAE latent normalisation and scheduler ([dev]: shift μ linear in the image token
#: count, 0.5 at 256 tokens to 1.15 at 4096).
FLUX_VAE_FACTORS = {"shift_factor": 0.1159, "scaling_factor": 0.3611}
FLUX_SCHEDULE = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


#: The tiny FLUX.1-shaped transformer (also Chroma's in :mod:`.tiny2026`): 1 double- and 1
#: single-stream block, 2 heads × 16 = 32 wide, RoPE axes (4, 6, 6) over (index, row, column),
#: ``in_channels`` 64 = 16 latent channels packed 2 × 2, T5 states of width 64.
TINY_FLUX1_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,
    "axes_dims_rope": (4, 6, 6),
}


def tiny_sd3_components(
    tokenizer: Any, tokenizer_2: Any, tokenizer_3: Any, *, seed: int = 0, qk_norm: str | None = None
) -> dict[str, Any]:
    """SD3-shaped but tiny components, random weights.

    Text: two projected CLIP encoders (widths 32 and 48, projections 32 and 48; SD3's CLIP-L and
    CLIP-G) and a T5 encoder of width 96. The pipeline concatenates the CLIPs' penultimate hidden
    states (77 × 80), zero-pads them to T5's width and stacks T5's states after them:
    ``encoder_hidden_states`` is (B, 77 + max_sequence_length, 96), so ``joint_attention_dim`` = 96,
    the T5 width; the pooled projections concatenate to ``pooled_projection_dim`` = 80.
    MMDiT: 2 joint blocks, 4 heads × 8 = 32 wide, patch 2, ``sample_size`` 8 (64 px by default),
    positions for up to 32 × 32 patches (512 px). ``qk_norm="rms_norm"`` gives SD3.5's q/k norm.
    VAE: factor 8, 16 latent channels. Scheduler: flow-matching Euler, shift 3.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    with seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=96,
            caption_projection_dim=32,
            pooled_projection_dim=32 + 48,
            pos_embed_max_size=32,
            qk_norm=qk_norm,
        )
    vae = tiny_flow_vae(seed + 1, **SD3_VAE_FACTORS)
    with seeded(seed + 2):
        text_encoder = clip_text_encoder(tokenizer, 32, layers=2, heads=4, intermediate=64, projection_dim=32)
    with seeded(seed + 3):
        text_encoder_2 = clip_text_encoder(
            tokenizer_2, 48, layers=2, heads=4, intermediate=96, hidden_act="gelu", projection_dim=48
        )
    with seeded(seed + 4):
        text_encoder_3 = t5_text_encoder(tokenizer_3, 96, layers=2, heads=4, head_dim=8, ff=128)
    return eval_mode(
        {
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "text_encoder_3": text_encoder_3,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "tokenizer_3": tokenizer_3,
            "scheduler": FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULE),
        }
    )


def tiny_sd3_pipeline(tokenizer: Any, tokenizer_2: Any, tokenizer_3: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusion3Pipeline`` around :func:`tiny_sd3_components`."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**tiny_sd3_components(tokenizer, tokenizer_2, tokenizer_3, **kwargs))


def tiny_flux_components(
    tokenizer: Any, tokenizer_2: Any, *, seed: int = 0, guidance_embeds: bool = False
) -> dict[str, Any]:
    """FLUX.1-shaped but tiny components, random weights.

    Text: a CLIP encoder of width 32 whose pooled output (the final-norm state at ``<|endoftext|>``, not
    projected) feeds ``pooled_projection_dim`` = 32, and a T5 encoder of width 64 whose states
    are ``encoder_hidden_states`` alone (``joint_attention_dim`` = 64). Transformer: 1 double- and
    1 single-stream block, 2 heads × 16 = 32 wide, RoPE axes (4, 6, 6) over (index, row, column),
    ``in_channels`` 64 = 16 latent channels packed 2 × 2; ``guidance_embeds=True`` makes it
    guidance-distilled like [dev] (the pipeline then passes ``guidance_scale`` as an input).
    VAE: factor 8, 16 latent channels, so images are multiples of 16 px. Scheduler: FLUX.1's
    dynamic shift (:data:`FLUX_SCHEDULE`).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    with seeded(seed):
        transformer = FluxTransformer2DModel(
            **TINY_FLUX1_TRANSFORMER, pooled_projection_dim=32, guidance_embeds=guidance_embeds
        )
    vae = tiny_flow_vae(seed + 1, **FLUX_VAE_FACTORS)
    with seeded(seed + 2):
        text_encoder = clip_text_encoder(tokenizer, 32, layers=2, heads=4, intermediate=64)
    with seeded(seed + 3):
        text_encoder_2 = t5_text_encoder(tokenizer_2, 64, layers=2, heads=4, head_dim=8, ff=128)
    return eval_mode(
        {
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE),
        }
    )


def tiny_flux_pipeline(tokenizer: Any, tokenizer_2: Any, **kwargs: Any) -> Any:
    """A ``FluxPipeline`` around :func:`tiny_flux_components`."""
    from diffusers import FluxPipeline

    return FluxPipeline(**tiny_flux_components(tokenizer, tokenizer_2, **kwargs))
