"""Single-file checkpoints (``model.safetensors``, ``.ckpt``): the form most fine-tunes are shared
in. The family is told from the file's keys by diffusers' own detection; the pipeline is built by
the family's ``from_single_file``, with the components a file lacks (text encoders, tokenizers,
the scheduler's config, or everything but the transformer) taken from a base model the user names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import LeditsError

#: File endings read as single-file checkpoints.
SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
#: diffusers' detected model type (by prefix) → the pipeline class that reads the file, for the
#: families whose pipeline has ``from_single_file`` (FLUX.2 [klein] and Qwen-Image have none).
PIPELINES = {
    "v1": "StableDiffusionPipeline",
    "v2": "StableDiffusionPipeline",
    "xl_base": "StableDiffusionXLPipeline",
    "playground-v2-5": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "sd35": "StableDiffusion3Pipeline",
    "flux-dev": "FluxPipeline",
    "flux-schnell": "FluxPipeline",
    "chroma": "ChromaPipeline",
    "z-image": "ZImagePipeline",
}
#: Key prefixes of the parts beside the denoiser that an all-in-one file of a transformer family holds.
_BESIDE_TRANSFORMER = ("text_encoders.", "first_stage_model.", "vae.", "text_encoder.")
#: The key a Stable Diffusion checkpoint's UNet must have (diffusers calls any file "v1" by default).
_SD_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
BASE_FIX = "pass the model it was fine-tuned from as the base (--base MODEL, base=): a hub id or a diffusers folder"


def is_single_file(model: str) -> bool:
    """Whether ``model`` names a file (rather than a folder or a hub id) ending in :data:`SUFFIXES`."""
    return Path(model).suffix.lower() in SUFFIXES and Path(model).is_file()


def detect(path: str) -> tuple[str, bool]:
    """The pipeline class that reads the checkpoint at ``path``, from its keys (diffusers'
    ``infer_diffusers_model_type``), and whether the file holds only the transformer; a file that
    is no checkpoint, or of no supported family, is refused."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    try:
        checkpoint = load_single_file_checkpoint(path, local_files_only=True)
    except Exception as exc:  # safetensors, pickle and torch each raise their own
        why = _first_line(exc)
        raise LeditsError(f"{path}: cannot be read as a checkpoint ({why}); is the file complete?") from exc
    kind = infer_diffusers_model_type(checkpoint)
    if kind in ("v1", "v2") and _SD_UNET_KEY not in checkpoint:
        kind = "unknown"
    pipeline = next((name for prefix, name in PIPELINES.items() if kind.startswith(prefix)), None)
    if pipeline is None:
        families = "SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1, Chroma, Z-Image"
        raise LeditsError(
            f"{path}: not a checkpoint of a family leditspp reads from one file (diffusers detects "
            f"{kind!r}; readable: {families}); for other families give a diffusers folder or hub id"
        )
    alone = "Stable" not in pipeline or pipeline == "StableDiffusion3Pipeline"
    return pipeline, alone and not any(k.startswith(_BESIDE_TRANSFORMER) for k in checkpoint)


def load_single_file(path: str, base: str | None, torch_dtype: torch.dtype | None) -> Any:
    """The pipeline of the checkpoint at ``path``: its family's ``from_single_file``, with the
    configs and the components the file lacks from ``base`` (a hub id or a diffusers folder;
    None: diffusers' default repository for the family, from the hub or its cache)."""
    import diffusers

    name, transformer_only = detect(path)
    if base is None and transformer_only:
        raise LeditsError(
            f"{path} holds only a {name.removesuffix('Pipeline')} transformer; its text encoders, tokenizers, "
            f"VAE and scheduler are missing — {BASE_FIX}"
        )
    kwargs: dict[str, Any] = {"torch_dtype": torch_dtype}
    if base is not None:
        name = _base_pipeline(base, name, path)
        kwargs["config"] = base
    if name == "StableDiffusionPipeline":
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    try:
        if transformer_only and base is not None:
            return _with_transformer(path, base, torch_dtype)
        return getattr(diffusers, name).from_single_file(path, **kwargs)
    except Exception as exc:  # diffusers raises many kinds for a missing or unfitting part
        if base is None:
            missing, fix = "its configs are not reachable and not in the cache", BASE_FIX
        else:
            missing, fix = f"a part {base!r} lacks or that does not fit", "give a base of the file's family and size"
        raise LeditsError(f"{path}: cannot build a {name} from it — {missing} ({_first_line(exc)}); {fix}") from exc


def _with_transformer(path: str, base: str, torch_dtype: torch.dtype | None) -> Any:
    """The base's pipeline with the file's transformer (diffusers' way for transformer-only files:
    the model class's ``from_single_file`` with the base's transformer config)."""
    import diffusers

    from .loading import from_folder  # (loading reads single files through this module)

    index = diffusers.DiffusionPipeline.load_config(base)
    model_class = getattr(diffusers, index["transformer"][1])
    transformer = model_class.from_single_file(path, config=base, subfolder="transformer", torch_dtype=torch_dtype)
    return from_folder(base, torch_dtype, transformer=transformer)


def _base_pipeline(base: str, detected: str, path: str) -> str:
    """The base's pipeline class, which must read the same family the file was detected as."""
    from diffusers import DiffusionPipeline

    try:
        name = DiffusionPipeline.load_config(base)["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise LeditsError(
            f"cannot read the base {base!r} ({_first_line(exc)}): give a hub id or a diffusers folder"
        ) from exc
    if name != detected:
        raise LeditsError(f"{path} is a {detected} checkpoint but the base {base!r} is a {name}; give a matching base")
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
