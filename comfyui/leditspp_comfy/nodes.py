"""The LEDITS++ nodes: ``LeditsInvert`` → ``LeditsConcept`` (chained, any number) → ``LeditsEdit``.

Class names, input names and types are a contract: saved workflows refer to them. Defaults come
from :mod:`leditspp.defaults`. Nodes never change their inputs (ComfyUI hands a cached output to
every later prompt): chaining a concept makes a new tuple, an inversion is a frozen value.
"""

from __future__ import annotations

from typing import Any

import torch

from leditspp import defaults
from leditspp.edits import Edit
from leditspp.errors import LeditsError
from leditspp.masking import MASK_MODES, MAX_PRESERVE
from leditspp.validation import SEED_LIMIT

from . import run
from .denoiser import comfy_adapter
from .text import encode, from_conditioning, token_positions

CATEGORY = "LEDITS++"
SOLVERS = ["dpmsolver++", "ddpm"]


class LeditsInvert:
    """Invert images exactly (edit-friendly inversion): the noise maps every later edit replays."""

    CATEGORY = CATEGORY
    FUNCTION = "invert"
    RETURN_TYPES = ("LEDITS_INVERSION",)
    RETURN_NAMES = ("inversion",)
    DESCRIPTION = (
        "Inverts the image exactly: an edit with no concept gives back the VAE-encoded image bit for bit. "
        "Connect the result to LeditsEdit (one inversion serves many edits)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": (
                    "MODEL",
                    {
                        "tooltip": "The diffusion model (SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1, Chroma, Qwen-Image), "
                        "with its LoRAs and patches."
                    },
                ),
                "vae": ("VAE", {"tooltip": "Encodes the image into the model's latents."}),
                "clip": ("CLIP", {"tooltip": "Encodes the empty prompt (and the source text) for the inversion."}),
                "image": (
                    "IMAGE",
                    {"tooltip": "Sides: multiples of 32 (SD 1.x/2.x, SDXL) or 16 (SD3, FLUX.1, Chroma, Qwen-Image)."},
                ),
                "steps": ("INT", {"default": defaults.STEPS, "min": 1, "max": 1000, "tooltip": "Steps N."}),
                "skip": (
                    "FLOAT",
                    {
                        "default": defaults.SKIP,
                        "min": 0.0,
                        "max": 0.99,
                        "step": 0.01,
                        "tooltip": "Fraction of the schedule skipped at the noisy end: N·(1+skip) steps are "
                        "built and the last N run. More skip keeps more of the image.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": defaults.SEED,
                        "min": 0,
                        "max": SEED_LIMIT - 1,
                        "tooltip": "Seed of the inversion's noises.",
                    },
                ),
                "solver": (SOLVERS, {"default": defaults.SOLVER, "tooltip": "Shared by the inversion and the edit."}),
                "source_guidance": (
                    "FLOAT",
                    {
                        "default": defaults.SOURCE_GUIDANCE,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "tooltip": "Guidance of the source prompt during the inversion (used only with one).",
                    },
                ),
            },
            "optional": {
                "source_text": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "What the image shows (optional)."},
                ),
                "source": ("CONDITIONING", {"tooltip": "The source prompt as a conditioning (wins over source_text)."}),
            },
        }

    def invert(
        self,
        model: Any,
        vae: Any,
        clip: Any,
        image: torch.Tensor,
        steps: int,
        skip: float,
        seed: int,
        solver: str,
        source_guidance: float,
        source_text: str = "",
        source: Any = None,
    ) -> tuple[run.ComfyInversion]:
        base, named = [encode(clip, "")], ""
        if source is not None:
            base, named = [*base, from_conditioning(source, "source")], "(the source conditioning)"
        elif source_text.strip():
            base, named = [*base, encode(clip, source_text)], source_text
        adapter = comfy_adapter(model, clip, vae)
        options = {"steps": steps, "skip": skip, "seed": seed, "solver": solver, "source_guidance": source_guidance}
        options["source_prompt"] = named
        return (run.invert(adapter, image, base, **options),)


class LeditsConcept:
    """One concept to add or remove; chain several by connecting a concept's output to the next."""

    CATEGORY = CATEGORY
    FUNCTION = "concept"
    RETURN_TYPES = ("LEDITS_CONCEPTS",)
    RETURN_NAMES = ("concepts",)
    DESCRIPTION = "A concept for LeditsEdit, with its own guidance scale and mask threshold."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder of the model the edit runs on."}),
                "text": ("STRING", {"multiline": False, "default": "", "tooltip": "The concept, e.g. sunglasses."}),
                "direction": (["add", "remove"], {"tooltip": "Add the concept, or remove it."}),
                "scale": (
                    "FLOAT",
                    {
                        "default": defaults.EDIT_SCALE,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "tooltip": "Guidance scale.",
                    },
                ),
                "threshold": (
                    "FLOAT",
                    {
                        "default": defaults.EDIT_THRESHOLD,
                        "min": 0.0,
                        "max": 0.999,
                        "step": 0.001,
                        "tooltip": "Mask threshold: the quantile below which the concept does not act "
                        "(0.9 edits the top 10 % of the image).",
                    },
                ),
                "warmup": (
                    "INT",
                    {"default": defaults.WARMUP_STEPS, "min": 0, "max": 1000, "tooltip": "Edit steps before it acts."},
                ),
                "cooldown": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1000, "tooltip": "Edit step from which it stops (0: never)."},
                ),
            },
            "optional": {"concepts": ("LEDITS_CONCEPTS", {"tooltip": "Concepts to chain this one after."})},
        }

    def concept(
        self,
        clip: Any,
        text: str,
        direction: str,
        scale: float,
        threshold: float,
        warmup: int,
        cooldown: int,
        concepts: tuple[run.Concept, ...] = (),
    ) -> tuple[tuple[run.Concept, ...]]:
        if not text.strip():
            raise LeditsError("LeditsConcept: text is empty; type the concept to add or remove, e.g. sunglasses")
        if cooldown and cooldown <= warmup:
            raise LeditsError(f"LeditsConcept: cooldown ({cooldown}) must be 0 (never) or above warmup ({warmup})")
        conditioning = encode(clip, text)
        edit = Edit(
            text.strip(),
            scale=scale,
            threshold=threshold,
            remove=direction == "remove",
            warmup_steps=warmup,
            cooldown_steps=cooldown or None,
            conditioning=conditioning,
        )
        positions = token_positions(clip, text, conditioning.embeds.shape[1])
        return ((*concepts, run.Concept(edit, positions)),)


class LeditsEdit:
    """Edit an inversion with any number of concepts, each confined by its implicit mask."""

    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("LATENT", "MASK")
    RETURN_NAMES = ("latent", "masks")
    DESCRIPTION = (
        "Runs the edit on the inversion's noise maps. With no concept the latent is the input's, exactly. "
        "Decode the latent with VAEDecode; the masks show where each concept acted."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model the image was inverted with."}),
                "inversion": ("LEDITS_INVERSION", {"tooltip": "From LeditsInvert."}),
                "mask_mode": (
                    list(MASK_MODES),
                    {
                        "default": defaults.MASK_MODE,
                        "tooltip": "intersect: cross-attention ∩ noise mask (the paper's); attention or noise "
                        "alone; none: no mask.",
                    },
                ),
                "preserve": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": MAX_PRESERVE,
                        "tooltip": "-1: off. k ≥ 0: keep the source outside the masked region grown by k latent cells.",
                    },
                ),
            },
            "optional": {
                "concepts": ("LEDITS_CONCEPTS", {"tooltip": "From LeditsConcept; none reproduces the input."}),
                "mask": ("MASK", {"tooltip": "Optional: where the edit may act (1) — any size."}),
            },
        }

    def edit(
        self,
        model: Any,
        inversion: run.ComfyInversion,
        mask_mode: str,
        preserve: int,
        concepts: tuple[run.Concept, ...] = (),
        mask: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        latent, masks = run.edit(
            comfy_adapter(model),
            inversion,
            concepts,
            mask_mode=mask_mode,
            user_mask=mask,
            preserve=None if preserve < 0 else preserve,
        )
        return {"samples": latent}, masks


NODE_CLASS_MAPPINGS = {"LeditsInvert": LeditsInvert, "LeditsConcept": LeditsConcept, "LeditsEdit": LeditsEdit}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LeditsInvert": "LEDITS++ Invert",
    "LeditsConcept": "LEDITS++ Concept",
    "LeditsEdit": "LEDITS++ Edit",
}
