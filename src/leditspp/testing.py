"""Tiny, offline, SD-shaped components for tests, benchmarks and examples.

No weights can be downloaded here, so these build models from configs with fixed seeds. The
tokenizer is the real CLIP BPE tokenizer, derived from the vocabulary file that the PyPI package
``open-clip-torch`` ships (installed without its dependencies; it is never imported).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: SD 1.x's training schedule, used by the tiny models.
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}


#: Replays (a scale-0 concept re-runs the network at every step) and batch-vs-alone comparisons
#: stack the network's rows differently from the run they are compared with; fp32 kernels then
#: differ in the last bits (≈1e-7 relative per call) and the solver's steps carry that along.
#: Measured on the tiny test models: up to 1.0e-4 with latents of max |x| ≈ 2–4. The bound is
#: 1e-3 of the reference's largest magnitude: ≥ 20× that noise floor, and far below what a real
#: defect gives (another image's noise maps: ≈ 1, see tests/test_exactness.py).
FP32_REPLAY_RTOL = 1e-3


def replay_tolerance(reference: torch.Tensor) -> float:
    """The largest difference fp32 rounding explains between two runs near ``reference``."""
    return FP32_REPLAY_RTOL * reference.abs().max().item()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table used by the BPE vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the CLIP vocabulary: pip install --no-deps open-clip-torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer (49,408 tokens) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder


def clip_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """A real ``CLIPTokenizer`` (model_max_length 77) built offline in ``folder``.

    ``kwargs`` go to the tokenizer, e.g. ``pad_token="!"`` as in SD 2.x and SDXL's second tokenizer.
    """
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, **kwargs)


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


def tiny_vae(seed: int, **config: Any) -> Any:
    """A factor-8 ``AutoencoderKL`` (widths 16/16/32/32) with random weights; ``config`` adds to it."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        latent_channels=4,
        norm_num_groups=8,
        **config,
    )


def tiny_sd_components(
    tokenizer: Any, *, seed: int = 0, prediction_type: str = "epsilon", cross_attention_dim: int = 32
) -> dict[str, Any]:
    """SD-1.x-shaped but tiny components (UNet widths 32/32/64/64, VAE factor 8), random weights."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
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
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, cross_attention_dim, layers=2, heads=4, intermediate=64)
    scheduler = PNDMScheduler(
        **SD_SCHEDULE,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )
    for m in (unet, vae, text_encoder):
        m.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tiny_sdxl_components(tokenizer: Any, tokenizer_2: Any, *, seed: int = 0) -> dict[str, Any]:
    """SDXL-shaped but tiny components: two CLIP encoders of different widths (32, and 48 with a
    40-dim projection), a 3-level UNet with ``addition_embed_type="text_time"`` (cross-attention
    width 80 = 32 + 48), a factor-8 VAE with ``force_upcast``, and SDXL's Euler scheduler config."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
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
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, 32, layers=3, heads=4, intermediate=64, hidden_act="gelu")
    torch.manual_seed(seed + 3)
    text_encoder_2 = clip_text_encoder(
        tokenizer, 48, layers=3, heads=4, intermediate=96, hidden_act="gelu", projection_dim=40
    )
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading")
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
    }


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


def diffusers_port_xl(model: Any, scheduler: Any) -> Any:
    """diffusers' ``LEditsPPPipelineStableDiffusionXL`` on the components of an SDXL adapter."""
    from diffusers import LEditsPPPipelineStableDiffusionXL

    port = LEditsPPPipelineStableDiffusionXL(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    port.set_progress_bar_config(disable=True)
    return port


def diffusers_port(model: Any, scheduler: Any) -> Any:
    """diffusers' ``LEditsPPPipelineStableDiffusion`` on the components of an SD adapter.

    The port replaces the UNet's attention processors; wrap its use in
    :func:`keep_attention_processors` when the UNet is shared.
    """
    from diffusers import LEditsPPPipelineStableDiffusion

    port = LEditsPPPipelineStableDiffusion(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    port.set_progress_bar_config(disable=True)
    return port


def exact_port_scheduler(**config: Any) -> Any:
    """The scheduler that lets diffusers' LEdits++ port invert exactly: SDE-DPM-Solver++(2M) on
    :data:`SD_SCHEDULE` (plus ``config``) ending at the smallest training noise level."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        {**SD_SCHEDULE, **config}, algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="sigma_min"
    )


def port_edit_arguments(edits: Any, steps: int, *, threshold_zero: bool = False) -> dict[str, list]:
    """The edit arguments of diffusers' LEdits++ pipelines for ``edits`` (a sequence of
    :class:`~leditspp.Edit`): same concepts, directions, scales, thresholds and activity windows.
    ``threshold_zero`` sets every threshold to 0 (the port's way to switch the noise mask off)."""
    return {
        "editing_prompt": [e.prompt for e in edits],
        "reverse_editing_direction": [e.remove for e in edits],
        "edit_guidance_scale": [e.scale for e in edits],
        "edit_threshold": [0.0 if threshold_zero else e.threshold for e in edits],
        "edit_warmup_steps": [e.warmup_steps for e in edits],
        "edit_cooldown_steps": [steps if e.cooldown_steps is None else e.cooldown_steps for e in edits],
    }


@contextlib.contextmanager
def keep_attention_processors(unet: Any) -> Iterator[None]:
    """Give ``unet`` its attention processors back on exit."""
    processors = dict(unet.attn_processors)
    try:
        yield
    finally:
        unet.set_attn_processor(processors)
