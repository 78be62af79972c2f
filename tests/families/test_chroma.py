"""Chroma (``ChromaPipeline``) in the conformance suite, and what only Chroma has: the pipeline's float
0/1 text mask (which SDPA adds to the logits: diffusers#12116), true-CFG generation, T5 alone.
"""

from __future__ import annotations

import pytest
import torch

from leditspp import Conditioning, LeditsError, defaults
from leditspp.models import model_settings, supported
from leditspp.models.chroma import Chroma
from leditspp.models.families import adapter_from_components
from leditspp.models.flux import pack, unpack
from leditspp.solvers import NoiseLevel
from leditspp.testing.tiny2026 import tiny_chroma_pipeline

from . import seam
from .conformance import FamilyTests
from .kernel import Kernel


def _level(t: torch.Tensor) -> NoiseLevel:
    sigma = t.double() / 1000
    return NoiseLevel(t.double(), (1 - sigma).float(), sigma.float())


def _pipeline_velocity(pipe, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
    """``ChromaPipeline.__call__``'s transformer call for the packed latents of ``x`` (1, 16, h, w)."""
    embeds, text_ids, mask, *_ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu")
    h, w = x.shape[-2:]
    ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", embeds.dtype)
    attention_mask = pipe._prepare_attention_mask(1, (h // 2) * (w // 2), x.dtype, mask)
    assert attention_mask.dtype == torch.float32  # the pipeline's float 0/1 mask: SDPA adds it
    out = pipe.transformer(
        hidden_states=pack(x),
        timestep=t.expand(1).to(x.dtype) / 1000,
        encoder_hidden_states=embeds,
        txt_ids=text_ids,
        img_ids=ids,
        attention_mask=attention_mask,
        return_dict=False,
    )[0]
    return unpack(out, h, w)


class TestChroma(FamilyTests):
    family = "chroma"
    adapter = Chroma
    size_multiple = 16  # VAE 8 × the 2×2 packing
    kernel = Kernel(("transformer_blocks.",), ".attn", "text_image", masked=True)
    sequence_range = (1, 512)
    call = (("guidance_scale", 1.0),)

    def make_pipeline(self, request):
        return tiny_chroma_pipeline(seed=0)

    def latents_of(self, sample, height, width):
        return unpack(sample, height, width)

    def text_ids(self, pipe, prompt):
        return 0, pipe.tokenizer(prompt).input_ids, 512

    def defaults(self, editor):
        return {**super().defaults(editor), "num_inference_steps": editor.recommended["steps"]}

    # -- what only Chroma has -------------------------------------------------------------------------

    def test_refused_without_t5_and_listed_among_the_families(self, editor, folder, pipe):
        assert editor.model.condition_keys == ("embeds", "mask")
        assert "Chroma (ChromaTransformer2DModel" in supported()
        # a true-CFG model on FLUX.1-dev's scheduler config: its pipeline's 35 steps, no few-step settings
        assert model_settings(str(folder)) == {"recommended": {"steps": 35}}
        assert editor.recommended["skip"] == defaults.SKIP
        components = dict(pipe.components)
        with pytest.raises(LeditsError, match=r"lacks its T5 text_encoder; supported families: .*Chroma"):
            adapter_from_components({**components, "text_encoder": None})
        with pytest.raises(LeditsError, match=r"Linear models .* not supported; supported families: .*Chroma"):
            adapter_from_components({**components, "transformer": torch.nn.Linear(2, 2)})

    def test_the_estimate_is_the_velocity_of_the_pipelines_masked_call(self, editor, pipe):
        """Two rows of different times and prompts, each against the pipeline's own masked call; the
        mask reaches the blocks: without it the network differs."""
        model = editor.model
        x = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([700.0, 300.0])
        prompts = ["a red circle on a blue square", ""]
        ours = seam.estimate(model, x, _level(t), seam.encode_prompts(model, prompts))
        for row, prompt in enumerate(prompts):
            reference = _pipeline_velocity(pipe, x[row : row + 1], t[row], prompt)
            assert (ours[row] - reference[0]).abs().max() <= 1e-5, prompt
        cond = seam.encode_prompts(model, prompts[:1])
        unmasked = pipe.transformer(
            hidden_states=pack(x[:1]),
            timestep=t[:1] / 1000,
            encoder_hidden_states=cond.embeds,
            txt_ids=torch.zeros(cond.embeds.shape[1], 3),
            img_ids=pipe._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32),
            return_dict=False,
        )[0]
        assert (unpack(unmasked, 8, 12) - ours[:1]).abs().max() > 1e-3

    def test_a_generation_with_the_pipeline_is_our_guided_euler_steps(self, editor, pipe):
        """The pipeline's true-CFG generation (two transformer calls, ``neg + g(cond − neg)``, Euler)
        replayed with our estimates on its own timesteps."""
        model = editor.model
        x = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(1))
        prompt, scale = "a red circle", 5.0
        settings = {"height": 64, "width": 96, "num_inference_steps": 3, "guidance_scale": scale}
        pipe.set_progress_bar_config(disable=True)
        reference = unpack(pipe(prompt, latents=pack(x), output_type="latent", **settings).images, 8, 12)
        conditioning = Conditioning.cat([seam.unconditional(model, "", 1), seam.encode_prompts(model, [prompt])])
        sigmas = pipe.scheduler.sigmas
        for i, t in enumerate(pipe.scheduler.timesteps):
            v_neg, v_cond = seam.estimate(model, x.repeat(2, 1, 1, 1), _level(t.expand(2)), conditioning).chunk(2)
            x = x + (sigmas[i + 1] - sigmas[i]) * (v_neg + scale * (v_cond - v_neg))
        assert (x - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())

    def test_the_text_mask_covers_the_words_the_end_token_and_one_pad(self, editor):
        model = editor.model
        masks = seam.encode_prompts(model, ["red circle", "a blue cat"]).get("mask")
        for row, prompt in enumerate(("red circle", "a blue cat")):
            words = len(seam.token_positions(model, prompt))
            assert masks[row].sum() == words + 2 and masks[row, : words + 2].all()  # + </s> + one pad
