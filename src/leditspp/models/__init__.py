"""Model families: detection from loaded components, and loading from the hub or disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import defaults
from ..errors import LeditsError
from ..solvers import SPACINGS, FlowPath, NoisePath
from ..solvers.path import declared_spacing
from .base import Conditioning, ModelAdapter, fingerprint
from .flux import Flux
from .sd import StableDiffusion
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL
from .unet import prediction_type

SUPPORTED_FAMILIES = (
    "Stable Diffusion 1.x/2.x (UNet2DConditionModel + one CLIP text encoder)",
    "Stable Diffusion XL base and fine-tunes (two CLIP text encoders, addition_embed_type='text_time')",
    "their few-step distillations (SD-Turbo, SDXL-Turbo, SDXL-Lightning, Hyper-SD, LCM and LCM-LoRA)",
    "Stable Diffusion 3/3.5 (SD3Transformer2DModel, flow matching; with or without T5)",
    "FLUX.1 [dev]/[schnell] (FluxTransformer2DModel, flow matching, CLIP-L + T5)",
)


def _refuse(reason: str) -> LeditsError:
    return LeditsError(f"{reason}; supported families: {'; '.join(SUPPORTED_FAMILIES)}")


def adapter_from_components(
    components: dict[str, Any],
    *,
    force_zeros_for_empty_prompt: bool = True,
    mask_level: int = defaults.MASK_LEVEL,
    spacing: str | None = None,
) -> ModelAdapter:
    """Pick the family adapter from loaded diffusers components (a pipeline's ``components``).

    ``force_zeros_for_empty_prompt`` is the SDXL pipeline's config flag (zero c_∅ for "");
    ``mask_level`` the attention mask's level (a model folder's ``leditspp.json`` may set it);
    ``spacing`` overrides the timestep spacing read from the scheduler config (see
    :meth:`leditspp.solvers.NoisePath.from_scheduler_config`).
    """
    network = "transformer" if components.get("transformer") is not None else "unet"
    missing = [k for k in (network, "vae", "tokenizer", "scheduler") if components.get(k) is None]
    if missing:
        raise _refuse(f"the model lacks {', '.join(missing)}")
    scheduler = components["scheduler"]
    config = {"_class_name": type(scheduler).__name__, **dict(scheduler.config)}  # a scheduler made in code has none
    if network == "transformer":
        return _transformer_adapter(components, config)
    unet = components["unet"]
    added = getattr(unet.config, "addition_embed_type", None)
    common = {
        "unet": unet,
        "vae": components["vae"],
        "path": NoisePath.from_scheduler_config(config, spacing),
        "prediction": prediction_type(config),
        "mask_level": mask_level,
    }
    if added == "text_time":
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise _refuse("this SDXL-type model has only one text encoder (an SDXL refiner?), which is not supported")
        return StableDiffusionXL(
            **common,
            text_encoder=components["text_encoder"],
            text_encoder_2=components["text_encoder_2"],
            tokenizer=components["tokenizer"],
            tokenizer_2=components.get("tokenizer_2") or components["tokenizer"],
            force_zeros_for_empty_prompt=bool(force_zeros_for_empty_prompt),
        )
    if added is not None or components.get("text_encoder_2") is not None:
        raise _refuse(f"this model's UNet uses addition_embed_type={added!r} (or it has a second text encoder)")
    if components.get("text_encoder") is None:
        raise _refuse("the model lacks text_encoder")
    return StableDiffusion(**common, text_encoder=components["text_encoder"], tokenizer=components["tokenizer"])


def _transformer_adapter(components: dict[str, Any], config: dict[str, Any]) -> ModelAdapter:
    """The flow-transformer families, by the transformer's class (SD3/3.5, FLUX.1)."""
    kind = type(components["transformer"]).__name__
    if config.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
        raise _refuse(f"this {kind} model's scheduler is {config.get('_class_name')}, not a flow-matching one")
    common = {"transformer": components["transformer"], "vae": components["vae"]}
    path = FlowPath.from_scheduler_config(config)
    if kind == "SD3Transformer2DModel":
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise _refuse("this SD3 model lacks its CLIP text encoders (text_encoder, text_encoder_2)")
        return StableDiffusion3(
            **common,
            path=path,
            text_encoder=components["text_encoder"],
            text_encoder_2=components["text_encoder_2"],
            text_encoder_3=components.get("text_encoder_3"),
            tokenizer=components["tokenizer"],
            tokenizer_2=components.get("tokenizer_2") or components["tokenizer"],
            tokenizer_3=components.get("tokenizer_3"),
        )
    if kind == "FluxTransformer2DModel":
        if components.get("text_encoder") is None or components.get("text_encoder_2") is None:
            raise _refuse("this FLUX model lacks its text encoders (CLIP text_encoder, T5 text_encoder_2)")
        return Flux(
            **common,
            path=path,
            text_encoder=components["text_encoder"],
            text_encoder_2=components["text_encoder_2"],
            tokenizer=components["tokenizer"],
            tokenizer_2=components["tokenizer_2"],
        )
    raise _refuse(f"{kind} models are not supported")


#: The built-in demo model (a tiny SD-shaped model trained on the shapes world, issue 3).
DEMO_NAME = "demo"
DEMO_PATH = Path(__file__).resolve().parent.parent / "demo_model"


def resolve_model(model: str) -> str:
    """``"demo"`` → the shipped demo model's folder; anything else unchanged (hub id or folder).

    A local folder literally named ``demo`` is reached as ``./demo``.
    """
    if model == DEMO_NAME:
        if not (DEMO_PATH / "model_index.json").exists():
            raise LeditsError(
                f"the built-in demo model is missing from {DEMO_PATH}; reinstall leditspp, or rebuild it "
                "with `python training/train_demo.py all`"
            )
        return str(DEMO_PATH)
    return model


#: A model folder may hold this file: what it declares for leditspp (see :func:`model_settings`).
MODEL_SETTINGS_FILE = "leditspp.json"
#: Edit and inversion settings a model may recommend, with the defaults that hold where it does not
#: (their types are the types a recommendation must have).
RECOMMENDABLE: dict[str, Any] = {
    "solver": defaults.SOLVER,
    "steps": defaults.STEPS,
    "skip": defaults.SKIP,
    "scale": defaults.EDIT_SCALE,
    "threshold": defaults.EDIT_THRESHOLD,
    "mask_mode": defaults.MASK_MODE,
    "source_guidance": defaults.SOURCE_GUIDANCE,
}


#: What a few-step checkpoint recommends, by the spacing of its scheduler config: the 4 steps
#: Turbo, Lightning and LCM are distilled for, no skip, and the solver of their kind.
FEW_STEP_RECOMMENDED: dict[str, dict[str, Any]] = {
    "trailing": {"solver": "ddpm", "steps": 4, "skip": 0.0},
    "lcm": {"solver": "lcm", "steps": 4, "skip": 0.0},
}


def model_settings(model: str) -> dict[str, Any]:
    """What a local model folder declares in ``leditspp.json``: ``mask_level`` (int), ``spacing``
    (a timestep spacing, see :class:`~leditspp.solvers.NoisePath`) and
    ``recommended`` settings (keys of :data:`RECOMMENDABLE`: defaults the CLI and the web UI use
    for this model), over what its scheduler config implies (:data:`FEW_STEP_RECOMMENDED` for a
    few-step model). ``{}`` for hub ids (nothing is read before loading) and other folders."""
    path = Path(resolve_model(model)) / MODEL_SETTINGS_FILE
    if not path.is_file():
        few_step = FEW_STEP_RECOMMENDED.get(_folder_spacing(path.parent) or "", {})
        return {"recommended": dict(few_step)} if few_step else {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeditsError(f"{path}: cannot be read as JSON ({exc}); fix or remove the file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("recommended", {}), dict):
        raise LeditsError(f"{path}: must be a JSON object whose 'recommended' is an object; fix or remove the file")
    level = data.get("mask_level", defaults.MASK_LEVEL)
    recommended = data.get("recommended", {})
    bad = [k for k in data if k not in ("mask_level", "spacing", "recommended", "comment")]
    bad += [k for k, v in recommended.items() if k not in RECOMMENDABLE or not _of_type(v, type(RECOMMENDABLE[k]))]
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        bad.append("mask_level")
    if data.get("spacing", SPACINGS[0]) not in SPACINGS:
        bad.append("spacing")
    if bad:
        raise LeditsError(
            f"{path}: unknown or mistyped entries {bad}; it may give mask_level (int ≥ 0), spacing "
            f"(one of {list(SPACINGS)}) and recommended settings {sorted(RECOMMENDABLE)}"
        )
    spacing = {"spacing": data["spacing"]} if "spacing" in data else {}
    few_step = FEW_STEP_RECOMMENDED.get(data.get("spacing") or _folder_spacing(path.parent), {})
    return {"mask_level": level, "recommended": few_step | recommended} | spacing


def _folder_spacing(folder: Path) -> str | None:
    """The spacing a local model's scheduler config declares, read without loading the model."""
    try:
        return declared_spacing(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _of_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def size_multiple_hint(model: str) -> int | None:
    """The image side multiple of a local model (``"demo"`` or a folder) read from its VAE config
    without loading it; None for a hub id (known only once loaded)."""
    try:
        folder = Path(resolve_model(model))
        channels = json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"]
        transformer = folder / "transformer" / "config.json"
        if transformer.is_file():  # as TransformerModel.size_multiple: the patch grid
            return 2 ** (len(channels) - 1) * int(json.loads(transformer.read_text()).get("patch_size") or 2)
        level = model_settings(model).get("mask_level", defaults.MASK_LEVEL)
    except (LeditsError, OSError, ValueError, KeyError, TypeError):
        return None
    return 2 ** (len(channels) - 1) * 2**level  # as UNetModel.size_multiple


def quiet_loading() -> None:
    """No loading bars or warnings from diffusers and transformers in this process: the command
    line's output (and a Ray worker's, which Ray forwards) is leditspp's own bars, lines and errors.
    The library API leaves them as the user configured them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def load_pipeline(model: str, torch_dtype: torch.dtype | None) -> Any:
    """Load a diffusers pipeline from ``"demo"``, a hub id or a local folder, without a safety checker."""
    from diffusers import DiffusionPipeline

    model = resolve_model(model)

    kwargs: dict[str, Any] = {} if torch_dtype is None else {"dtype": torch_dtype}
    try:
        if "safety_checker" in DiffusionPipeline.load_config(model):  # SD 1.x/2.x pipelines: leave it out
            kwargs |= {"safety_checker": None, "requires_safety_checker": False}
        return DiffusionPipeline.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise LeditsError(
            f"cannot load model {model!r}: {str(exc).splitlines()[0]} — pass a Hugging Face hub id "
            "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a local folder in diffusers format "
            "(with model_index.json)"
        ) from exc


__all__ = [
    "DEMO_NAME",
    "DEMO_PATH",
    "FEW_STEP_RECOMMENDED",
    "RECOMMENDABLE",
    "Conditioning",
    "ModelAdapter",
    "StableDiffusion",
    "StableDiffusionXL",
    "adapter_from_components",
    "fingerprint",
    "load_pipeline",
    "model_settings",
    "quiet_loading",
    "resolve_model",
    "size_multiple_hint",
]
