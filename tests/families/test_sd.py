"""Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``) in the conformance suite."""

from __future__ import annotations

from diffusers import DDIMScheduler

from leditspp.models.sd import StableDiffusion
from leditspp.testing import tiny_sd_pipeline

from .conformance import FamilyTests
from .kernel import Kernel


class TestStableDiffusion(FamilyTests):
    family = "sd"
    adapter = StableDiffusion
    size_multiple = 32
    kernel = Kernel(("down_blocks.2.", "up_blocks.1."), "attn2", "cross")  # ¼ of the latents, mid block out
    refused = (("max_sequence_length", 64),)
    call = (("guidance_scale", 1.0),)
    folder_fixture, editor_fixture = "sd_folder", "editor"
    sized_path = False

    def make_pipeline(self, request):
        return tiny_sd_pipeline(request.getfixturevalue("tokenizer"), seed=0)

    def parity_scheduler(self, pipe):
        """DDIM on the pipeline's training schedule (its own PNDM step is not one deterministic step)."""
        return DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)

    def text_ids(self, pipe, prompt):
        return 0, pipe.tokenizer(prompt).input_ids, pipe.tokenizer.model_max_length
