"""Weights the user's graph chose stay in force: a model whose weights ComfyUI stores in fp8 (the
``weight_dtype`` of its loaders) edits with those weights, cast by ComfyUI's own ops at each call."""

from __future__ import annotations

import torch

from .comfy_env import require_comfyui

require_comfyui()

import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402
from leditspp_comfy.nodes import LeditsConcept, LeditsEdit, LeditsInvert  # noqa: E402

from . import tiny  # noqa: E402


def fp8_twin(model) -> tuple[object, object]:
    """``model`` stored in fp8 the way ComfyUI loads it with an fp8 ``weight_dtype`` (its manual-cast
    ops compute in fp32), and the fp32 model of the same rounded weights."""
    config = comfy.supported_models.SD15(dict(tiny.TINY_UNET))
    config.set_inference_dtype(torch.float8_e4m3fn, torch.float32)
    stored = config.get_model({})
    stored.diffusion_model.load_state_dict(model.model.diffusion_model.state_dict())
    rounded = tiny.tiny_model()
    rounded.model.diffusion_model.load_state_dict(
        {k: v.float() for k, v in stored.diffusion_model.state_dict().items()}
    )
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(stored, load_device=cpu, offload_device=cpu), rounded


def run(model, clip, vae, concepts=()):
    inversion = LeditsInvert().invert(model, vae, clip, tiny.image(), 3, 0.15, 0, "dpmsolver++", 3.5)[0]
    return LeditsEdit().edit(model, inversion, "intersect", -1, concepts=concepts)[0]["samples"]


def test_an_fp8_model_edits_with_its_fp8_weights():
    model, clip, vae = tiny.tiny_model(), tiny.tiny_clip(), tiny.tiny_vae()
    fp8, rounded = fp8_twin(model)
    assert {p.dtype for p in fp8.model.diffusion_model.parameters()} == {torch.float8_e4m3fn}
    concepts = LeditsConcept().concept(clip, "a red hat", "add", 5.0, 0.5, 0, 0)[0]
    assert torch.equal(run(fp8, clip, vae), vae.encode(tiny.image()))  # exact with no concept
    edited = run(fp8, clip, vae, concepts)
    assert torch.equal(edited, run(rounded, clip, vae, concepts))  # the fp8 values, cast at each call
    assert not torch.equal(edited, run(model, clip, vae, concepts))  # not the fp32 model's
