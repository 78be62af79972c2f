"""The harness that runs diffusers' LEdits++ port beside leditspp: the port on an adapter's
components, the scheduler with which it inverts exactly, our edits as its arguments, and its
attention processors given back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..demo import SD_SCHEDULE


def diffusers_port_xl(model: Any, scheduler: Any) -> Any:
    """diffusers' ``LEditsPPPipelineStableDiffusionXL`` on the components of an SDXL adapter."""
    from diffusers import LEditsPPPipelineStableDiffusionXL

    port = LEditsPPPipelineStableDiffusionXL(
        vae=model.autoencoder.vae,
        text_encoder=model.text.text_encoder,
        text_encoder_2=model.text.text_encoder_2,
        tokenizer=model.text.tokenizer,
        tokenizer_2=model.text.tokenizer_2,
        unet=model.denoiser.unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=model.text.zeros_for_empty,
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
        vae=model.autoencoder.vae,
        text_encoder=model.text.text_encoder,
        tokenizer=model.text.tokenizer,
        unet=model.denoiser.unet,
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
