"""Tiny, offline DeepFloyd IF pipelines for tests: stage I (``IFPipeline``) and stage II
(``IFSuperResolutionPipeline``), random weights, built from configs in IF's shape.

Stage I's UNet is IF-I's in miniature: pixel space (3 channels in, 6 out: ε and the learned
variance), ``addition_embed_type="text"`` (T5 states pooled into the time embedding),
``encoder_hid_dim`` = the T5 width, simple cross-attention blocks whose attention is diffusers'
added-KV attention (the text's keys and values joined before the image's), and four levels, so a
64² image has 8×8 attention maps at level 3 as IF-I's have. Stage II's UNet takes the noisy
256² image beside the upsampled 64² one (6 channels in) and the noise level as a class embedding.
The scheduler is IF's: ``squaredcos_cap_v2`` betas, learned-range variance, dynamic thresholding.
The T5 tokenizer is :func:`leditspp.testing.tokenizers.t5_tokenizer` with IF's 77-token window.

Every builder seeds inside ``torch.random.fork_rng()``: the caller's global RNG is left as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tiny import eval_mode, seeded, t5_text_encoder
from .tokenizers import t5_tokenizer

if TYPE_CHECKING:
    from diffusers import IFPipeline, IFSuperResolutionPipeline

#: IF's text window: its pipelines encode prompts to 77 T5 tokens.
IF_TOKENS = 77
#: The tiny T5's width, which the UNets' ``encoder_hid_dim`` reads.
T5_WIDTH = 48
#: IF's noise schedule and its DDPM sampler's settings (IF-I-XL's ``scheduler_config.json``).
IF_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "variance_type": "learned_range",
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.95,
    "sample_max_value": 1.5,
    "prediction_type": "epsilon",
}
#: What both stages' UNets share: IF's text conditioning and its attention and resnet variants.
_IF_UNET = {
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "encoder_hid_dim": T5_WIDTH,
    "attention_head_dim": 8,
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 2,
    "cross_attention_norm": "group_norm",
    "resnet_time_scale_shift": "scale_shift",
    "act_fn": "gelu",
    "norm_num_groups": 8,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
}


def if_tokenizer(folder: str | Path) -> Any:
    """The tiny T5 tokenizer with IF's 77-token window, saved to ``folder`` and loaded back."""
    return t5_tokenizer(folder, model_max_length=IF_TOKENS)


def tiny_if_components(tokenizer: Any, *, seed: int = 0) -> dict[str, Any]:
    """IF-I-shaped components: a 4-level pixel-space UNet (widths 16/32/32/64; attention at 32²,
    16² and 8² of a 64² image), a T5 encoder of width :data:`T5_WIDTH`, IF's DDPM scheduler."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=3,
            out_channels=6,
            block_out_channels=(16, 32, 32, 64),
            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
            up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
            **_IF_UNET,
        )
    with seeded(seed + 1):
        text_encoder = t5_text_encoder(tokenizer, T5_WIDTH, layers=2, heads=4, head_dim=8, ff=96)
    return eval_mode(
        {
            "unet": unet,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "scheduler": DDPMScheduler(**IF_SCHEDULE),
        }
    )


def tiny_if_pipeline(tokenizer: Any, **kwargs: Any) -> IFPipeline:
    """An ``IFPipeline`` around :func:`tiny_if_components` (no safety checker, no watermarker)."""
    from diffusers import IFPipeline

    return IFPipeline(
        **tiny_if_components(tokenizer, **kwargs),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def tiny_if_superresolution_components(tokenizer: Any, *, seed: int = 0) -> dict[str, Any]:
    """IF-II-shaped components, 64² → 256²: a 4-level UNet (widths 8/8/16/16) whose input is the
    noisy image beside the upsampled one, the noise level as a class embedding, attention only in
    its 32² middle block; the same T5 as :func:`tiny_if_components` (same seed, so stage I's
    embeddings are stage II's); IF's schedulers."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    with seeded(seed + 2):
        unet = UNet2DConditionModel(
            sample_size=256,
            in_channels=6,
            out_channels=6,
            block_out_channels=(8, 8, 16, 16),
            down_block_types=("ResnetDownsampleBlock2D",) * 4,
            up_block_types=("ResnetUpsampleBlock2D",) * 4,
            class_embed_type="timestep",
            mid_block_scale_factor=1.414,
            time_embedding_act_fn="gelu",
            time_embedding_dim=32,
            **_IF_UNET,
        )
    with seeded(seed + 1):
        text_encoder = t5_text_encoder(tokenizer, T5_WIDTH, layers=2, heads=4, head_dim=8, ff=96)
    noising = {k: IF_SCHEDULE[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end")}
    return eval_mode(
        {
            "unet": unet,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "scheduler": DDPMScheduler(**IF_SCHEDULE),
            "image_noising_scheduler": DDPMScheduler(**noising),
        }
    )


def tiny_if_superresolution_pipeline(tokenizer: Any, **kwargs: Any) -> IFSuperResolutionPipeline:
    """An ``IFSuperResolutionPipeline`` around :func:`tiny_if_superresolution_components`."""
    from diffusers import IFSuperResolutionPipeline

    return IFSuperResolutionPipeline(
        **tiny_if_superresolution_components(tokenizer, **kwargs),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
