"""Stable Diffusion XL (``StableDiffusionXLPipeline``) in the conformance suite."""

from __future__ import annotations

from diffusers import DDIMScheduler

from leditspp.models.sdxl import StableDiffusionXL
from leditspp.testing import tiny_sdxl_pipeline

from .conformance import FamilyTests
from .kernel import Kernel


class TestStableDiffusionXL(FamilyTests):
    family = "sdxl"
    adapter = StableDiffusionXL
    size_multiple = 32
    kernel = Kernel(("down_blocks.2.", "up_blocks.0."), "attn2", "cross")
    refused = (("max_sequence_length", 64),)
    call = (("guidance_scale", 1.0),)
    folder_fixture, editor_fixture = "sdxl_folder", "xl_editor"
    sized_path = False

    def make_pipeline(self, request):
        tokenizers = (request.getfixturevalue(name) for name in ("tokenizer", "tokenizer_2"))
        return tiny_sdxl_pipeline(*tokenizers, seed=0)

    def parity_scheduler(self, pipe):
        """DDIM on the pipeline's training schedule (its own Euler step is not one deterministic step)."""
        return DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)

    def text_ids(self, pipe, prompt):
        """The concepts' tokens come from the second tokenizer (it pads with "!")."""
        return 0, pipe.tokenizer_2(prompt).input_ids, pipe.tokenizer_2.model_max_length
