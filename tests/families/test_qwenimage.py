"""Qwen-Image (``QwenImagePipeline``) in the conformance suite, and what only Qwen-Image has: the
dropped template prefix, the text mask through the rows, the terminal σ, the img2img latents."""

from __future__ import annotations

import pytest
import torch

from leditspp import Conditioning, Editor
from leditspp.models.flux import unpack
from leditspp.models.qwenimage import QwenImage
from leditspp.solvers import NoiseLevel
from leditspp.testing.tiny2026 import tiny_qwenimage_pipeline

from . import seam
from .conformance import FamilyTests
from .kernel import Kernel


def templated(pipe, prompt: str) -> list[int]:
    """The ids of ``prompt`` in ``QwenImagePipeline``'s template, with all of them (the prefix too)."""
    return pipe.tokenizer(pipe.prompt_template_encode.format(prompt)).input_ids


class TestQwenImage(FamilyTests):
    family = "qwenimage"
    adapter = QwenImage
    size_multiple = 16  # VAE factor 8 (3 temporal entries) × the 2×2 packing
    kernel = Kernel(("transformer_blocks.",), ".attn", "text_image", masked=True)
    sequence_range = (1, 1024)

    def make_pipeline(self, request):
        return tiny_qwenimage_pipeline(seed=0)

    def latents_of(self, sample, height, width):
        return unpack(sample, height, width)

    def text_ids(self, pipe, prompt):
        """The pipeline drops the template's first ``prompt_template_encode_start_idx`` tokens."""
        return 0, templated(pipe, prompt)[pipe.prompt_template_encode_start_idx :], 512

    def defaults(self, editor):
        return {**super().defaults(editor), "num_inference_steps": editor.recommended["steps"]}

    # -- what only Qwen-Image has ---------------------------------------------------------------------

    def test_the_velocity_of_prompts_of_different_lengths_is_the_pipelines(self, editor, pipe):
        """The pipeline's transformer calls (unpadded prompts; a mask only where two prompts differ in
        length) against our estimate on the same latents and σ (every prompt padded to 512, masked)."""
        model = editor.model
        calls = []

        def spy(module, args, kwargs, output):
            calls.append({**kwargs, "output": output[0]})

        handle = pipe.transformer.register_forward_hook(spy, with_kwargs=True)
        pipe.set_progress_bar_config(disable=True)
        prompts = ["a red circle", "a yellow cat wearing sunglasses"]
        try:
            pipe(prompts, height=64, width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        finally:
            handle.remove()
        assert len(calls) == 2 and calls[0]["encoder_hidden_states"].shape[1] < 512
        assert not calls[0]["encoder_hidden_states_mask"].all()
        cond = seam.encode_prompts(model, prompts)
        assert cond.embeds.shape[1] == 512 and cond.get("mask").sum(1).tolist() == [8, 10]
        for call in calls:
            sigma = call["timestep"].double()
            level = NoiseLevel(sigma * 1000, 1 - sigma, sigma)
            ours = seam.estimate(model, unpack(call["hidden_states"], 8, 8), level, cond)
            theirs = unpack(call["output"].float(), 8, 8)
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()

    def test_latents_are_the_img2img_pipelines_and_decode_undoes_them(self, editor, pipe, monkeypatch):
        """encode = ``QwenImageImg2ImgPipeline._encode_vae_image`` (posterior mode, per-channel
        ``(z − mean)·(1/std)``) without the frame axis; decode undoes exactly that normalisation."""
        import diffusers.pipelines.qwenimage.pipeline_qwenimage_img2img as img2img

        model = editor.model
        pixels = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
        mode = img2img.retrieve_latents
        monkeypatch.setattr(img2img, "retrieve_latents", lambda out, generator=None: mode(out, sample_mode="argmax"))
        parts = (pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.transformer)
        theirs = img2img.QwenImageImg2ImgPipeline(None, *parts)._encode_vae_image(pixels[:, :, None], generator=None)
        ours = seam.encode(model, pixels)
        assert ours.shape == (2, 16, 8, 12) and theirs.shape == (2, 16, 1, 8, 12)
        assert torch.allclose(ours, theirs[:, :, 0], atol=1e-6, rtol=0)
        raw = pipe.vae.encode(pixels[:, :, None]).latent_dist.mode()
        direct = pipe.vae.decode(raw).sample[:, :, 0].clamp(-1, 1)
        assert torch.allclose(seam.decode(model, ours), direct, atol=1e-5, rtol=0)

    def test_rows_keep_each_prompts_mask(self, editor):
        """Repeated and stacked rows carry their own masks (the pipeline's ``num_images_per_prompt``
        pairs them with the wrong prompts; ours are repeated key by key), and the padding is zeros."""
        model = editor.model
        prompts = ["a red circle", "a blue square"]
        rows = Conditioning.cat([seam.unconditional(model, "", 2), seam.encode_prompts(model, prompts)]).repeat_rows(2)
        mask = rows.get("mask")
        assert mask.dtype == torch.bool and mask.sum(1).tolist() == [5, 5, 5, 5, 8, 8, 8, 8]
        assert not rows.embeds[~mask].any() and rows.embeds[mask].abs().amin(-1).gt(0).any()

    def test_one_step_ends_at_the_terminal_sigma_where_the_pipelines_own_schedule_is_nan(self, editor, pipe, folder):
        """With N = 1 the pipeline's sigmas [1] make shift_terminal divide 0 by 0; our path's N + 1
        grid points give the one step σ = 1 and its end σ = 0.02."""
        from leditspp.models import model_settings
        from leditspp.solvers import step_table

        assert model_settings(str(folder)) == {"recommended": {"steps": 50}}  # its pipeline's step count
        path = seam.noise_path(editor.model, 8, 8)
        assert path.describe() == "flow mu 0.487903 pipeline-grid terminal 0.02"
        with pytest.warns(RuntimeWarning, match="invalid value encountered in divide"):
            pipe.scheduler.set_timesteps(sigmas=[1.0], mu=path.mu)
        assert pipe.scheduler.sigmas[0].isnan()
        table = step_table("ddpm", path, 1, 0.0)
        assert abs(float(table.timesteps[0]) - 1000.0) < 1e-9 and abs(float(table.end) - 20.0) < 1e-9

    def test_the_conditioning_at_the_positions_is_the_encoders_states_of_those_tokens(self, editor, pipe):
        model, drop = editor.model, pipe.prompt_template_encode_start_idx
        assert drop == 34  # the system prompt and "<|im_start|>user\n"
        for prompt in ("a red circle", "a purple dog wearing a hat"):
            positions = seam.token_positions(model, prompt)
            ids = templated(pipe, prompt)
            assert ids[:drop] == templated(pipe, "")[:drop]
            states = pipe.text_encoder(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
            embeds = seam.encode_prompts(model, [prompt]).embeds[0]
            assert torch.allclose(embeds[positions], states[[drop + p for p in positions]], atol=1e-6)

    def test_a_prompt_longer_than_the_window_warns_and_is_cut(self, pipe, caplog):
        short = Editor.from_pipe(pipe, max_sequence_length=24).model
        long = "a red circle " * 10
        with caplog.at_level("WARNING", logger="leditspp"):
            cut = seam.encode_prompts(short, [long])
        assert "reads only the first 24" in caplog.text and bool(cut.get("mask").all())
        assert seam.token_positions(short, long) == list(range(24))
