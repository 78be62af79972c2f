"""FLUX.1 (``FluxPipeline``, a guidance-distilled [dev]-like checkpoint) in the conformance suite."""

from __future__ import annotations

from leditspp.models.flux import Flux, unpack
from leditspp.testing import tiny_flux_pipeline

from . import seam
from .conformance import FamilyTests
from .kernel import Kernel


class TestFlux(FamilyTests):
    family = "flux"
    adapter = Flux
    size_multiple = 16  # VAE 8 × the 2×2 packing
    kernel = Kernel(("transformer_blocks.",), ".attn", "text_image")  # the double-stream blocks
    sequence_range = (0, 512)
    folder_fixture, editor_fixture = "flux_folder", "flux_editor"

    def make_pipeline(self, request):
        tokenizers = (request.getfixturevalue(name) for name in ("tokenizer", "tokenizer_t5"))
        return tiny_flux_pipeline(*tokenizers, seed=0, guidance_embeds=True)

    def latents_of(self, sample, height, width):
        return unpack(sample, height, width)

    def text_ids(self, pipe, prompt):
        return 0, pipe.tokenizer_2(prompt).input_ids, 512

    def defaults(self, editor):
        """[dev]'s embedded guidance is the pipeline's ``guidance_scale``."""
        return {**super().defaults(editor), "guidance_scale": editor.model.denoiser.guidance}

    def test_the_shift_follows_the_size(self, editor):
        assert seam.noise_path(editor.model, 8, 8).describe() != seam.noise_path(editor.model, 8, 12).describe()
