"""DeepFloyd IF (``IFPipeline``, stage II ``IFSuperResolutionPipeline``) in the conformance suite, and
what only IF has: pixel space (the input centre-cropped to 64²), 6 output channels (ε and a learned
variance), added-KV attention (the text keys before the image keys under one softmax) read on the
8×8 maps, lower-cased prompts, and its stage II to 256².
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from PIL import Image

from leditspp import Editor, LeditsError
from leditspp.cli import main
from leditspp.io import as_pixel_batch, centre_crop, resize_pixels, to_pil
from leditspp.models import DeepFloydIF, model_settings
from leditspp.models.families import size_multiple_of_folder
from leditspp.solvers import NoiseLevel
from leditspp.testing import tiny_sd_pipeline
from leditspp.testing.tiny_if import tiny_if_pipeline, tiny_if_superresolution_pipeline

from ..conftest import scene
from . import seam
from .conformance import FamilyTests
from .kernel import Kernel, armed_layers, inputs, kernel_calls


@pytest.fixture(scope="module")
def upscaler(tokenizer_if):
    return tiny_if_superresolution_pipeline(tokenizer_if, seed=0)


@pytest.fixture(scope="module")
def photo():
    """Wider than tall, so the centre crop shows."""
    return scene(80, 120, seed=4)


class TestDeepFloydIF(FamilyTests):
    family = "deepfloyd-if"
    adapter = DeepFloydIF
    size_multiple = 8  # pixel space, 8×8 maps of 64²: 2^mask_level
    # the down and up blocks at 1/8 (the tiny UNet: 1 attention per down block, 2 per up block), mid block out
    kernel = Kernel(("down_blocks.3.", "up_blocks.0."), ("attentions.0", "attentions.1"), "text_keys_first")
    refused = (("max_sequence_length", 64),)
    call = (("guidance_scale", 1.0), ("clean_caption", False))
    folder_fixture, editor_fixture = "if_folder", "if_editor"
    sized_path = False
    photo_size = (64, 64)  # centre-cropped to a square, 64²
    # a scale-0 replay with dpmsolver++ lands 1.9× the fp32 bound away (pixel space; the tiny stage I's
    # calls round ~4× the tiny SD UNet's, 4.9e-6 vs 1.2e-6 of their largest output), ddpm 0.1×
    replay_scale = 4.0

    def make_pipeline(self, request):
        return tiny_if_pipeline(request.getfixturevalue("tokenizer_if"), seed=0)

    def parity_scheduler(self, pipe):
        """DDIM on IF's schedule with a fixed variance, so the pipeline hands the step ε alone."""
        config = {**pipe.scheduler.config, "variance_type": "fixed_small"}
        return DDIMScheduler.from_config(config, clip_sample=False, thresholding=False)

    def text_ids(self, pipe, prompt):
        return 0, pipe.tokenizer(prompt.lower().strip()).input_ids, 77

    def defaults(self, editor):
        """The recommended 100 steps (the authors') are ``IFPipeline``'s own default."""
        return {"num_inference_steps": editor.recommended["steps"]}

    def test_the_concepts_text_keys_are_where_this_suite_reads_them(self, kernel_model, monkeypatch):
        """IF pools the text into its time embedding, so changing a concept moves image keys too; its
        text keys are told instead by the layers' added key projection (the text's own keys): in every
        armed kernel call the first L keys are that projection's output split into heads, and the
        image cells' keys follow."""
        model = kernel_model
        cond, x, level = inputs(model)
        grid = seam.mask_grid(model, *x.shape[-2:])
        projected: list[torch.Tensor] = []
        layers = armed_layers(model, self.kernel)
        hooks = [
            layer.add_k_proj.register_forward_hook(lambda _m, _i, out: projected.append(out.detach().clone()))
            for layer in layers
        ]
        try:
            with kernel_calls(model, self.kernel, monkeypatch) as calls:
                seam.estimate(model, x, level, cond)
        finally:
            for hook in hooks:
                hook.remove()
        tokens = cond.embeds.shape[1]
        assert len(calls) == len(projected) == len(layers) > 0
        for (_, key, _, _), text in zip(calls, projected, strict=True):
            rows, heads, count, dim = key.shape
            assert count == tokens + grid[0] * grid[1]
            assert torch.equal(key[:, :, :tokens], text.view(rows, tokens, heads, dim).transpose(1, 2))

    # -- what only IF has ---------------------------------------------------------------------------

    def test_the_tiny_pipelines_generate_with_their_own_call(self, pipe, upscaler):
        generator = torch.Generator().manual_seed(0)
        low = pipe("a red hat", num_inference_steps=2, output_type="pt", generator=generator, clean_caption=False)
        assert low.images.shape == (1, 3, 64, 64) and torch.isfinite(low.images).all()
        high = upscaler(
            image=low.images,
            prompt="a red hat",
            num_inference_steps=2,
            output_type="pt",
            generator=generator,
            clean_caption=False,
        )
        assert high.images.shape == (1, 3, 256, 256) and torch.isfinite(high.images).all()

    def test_recommended_settings_levels_and_what_it_needs(self, folder, editor, upscaler):
        """The authors' settings; the 8×8 maps of 64² at mask level 3; no VAE needed (SD without its VAE
        is still refused); a stage II given as the model, or the upscaler to another family, refused."""
        assert model_settings(str(folder))["recommended"] == {"steps": 100, "skip": 0.15}
        assert size_multiple_of_folder(folder, {"mask_level": 2}) == 4
        assert seam.mask_grid(editor.model, 64, 64) == (8, 8) and set(seam.components(editor.model)) == {
            "unet",
            "text_encoder",
        }
        with pytest.raises(LeditsError, match=r"super-resolution stage.*upscaler option"):
            Editor.from_pipe(upscaler)
        with pytest.raises(LeditsError, match="must be a DeepFloyd IF stage II model"):
            Editor.from_pipe(DiffusionPipeline.from_pretrained(folder), upscaler=editor.model.text.text_encoder)

    def test_other_families_need_their_vae_and_refuse_the_upscaler(self, request, upscaler):
        sd = tiny_sd_pipeline(request.getfixturevalue("tokenizer"), seed=0)
        with pytest.raises(LeditsError, match="the model lacks vae; supported families"):
            Editor.from_pipe(dict(sd.components, vae=None))
        with pytest.raises(LeditsError, match="do not take upscaler"):
            Editor.from_pipe(sd, upscaler=upscaler)

    def test_the_estimate_is_the_noise_half_of_the_unets_six_channels(self, editor):
        """ε is the first 3 of the 6 output channels (the others: the learned variance, not used)."""
        model = editor.model
        cond = seam.encode_prompts(model, ["", "a red hat"])
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([700.0, 300.0])
        a, s = seam.levels(model, t)
        eps = seam.estimate(model, x, NoiseLevel(t, a.float(), s.float()), cond)
        out = seam.network(model)(x, t, encoder_hidden_states=cond.embeds).sample
        assert out.shape[1] == 6 and eps.shape == x.shape
        assert torch.equal(eps, out[:, :3]) and not torch.allclose(out[:, :3], out[:, 3:], atol=1e-2)

    def test_the_text_conditions_are_what_the_pipeline_gives_its_unet(self, folder, editor):
        """``IFPipeline.__call__``'s UNet input with guidance: [c_∅; c] as ours encode them, the prompt
        lower-cased and stripped as IF's pipelines give it to T5."""
        pipe = DiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        seen = []
        pipe.unet.register_forward_pre_hook(
            lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"]), with_kwargs=True
        )
        pipe("A Red Hat ", num_inference_steps=1, guidance_scale=7.0, clean_caption=False, output_type="pt")
        model = editor.model
        ours = torch.cat([seam.unconditional(model, "", 1).embeds, seam.encode_prompts(model, ["A Red Hat "]).embeds])
        assert len(seen) == 1 and torch.equal(seen[0], ours)
        assert seam.token_positions(model, "  A RED Hat ") == seam.token_positions(model, "a red hat") == [0, 1, 2]

    @pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
    def test_the_input_is_centre_cropped_to_64_and_returned_exactly(self, editor, photo, solver):
        """Stage I sees the input as the authors give it to IF (centre-cropped to a square, resized to
        64²), and with no concept returns exactly those pixels."""
        inversion = editor.invert(photo, steps=3, solver=solver, seed=0)
        [pixels] = as_pixel_batch(photo)
        expected = resize_pixels([centre_crop(pixels, (64, 64))], (64, 64)) * 2 - 1
        assert torch.equal(inversion.source_latents, expected) and (inversion.info.height, inversion.info.width) == (
            64,
            64,
        )
        result = editor.edit(inversion)
        assert torch.equal(result.latents, inversion.source_latents)
        assert np.array_equal(np.asarray(result.images[0]), np.asarray(to_pil(expected)[0]))

    def test_an_edit_changes_the_image_where_its_8x8_attention_mask_is(self, editor, photo):
        inversion = editor.invert(photo, steps=3, seed=0)
        result = editor.edit(inversion, "+a red hat", mask_mode="attention")
        changed = (result.latents - inversion.source_latents).abs()
        mask = result.masks[0, 0]
        blocks = mask.view(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)  # each 8×8 cell of one M¹ entry
        assert result.masks.shape == (1, 1, 64, 64) and torch.equal(blocks, blocks[:, :1].expand(-1, 64))
        assert 0 < mask.mean() < 1 and changed.amax() > 0.1
        assert changed.sum(1)[0][mask == 0].amax() < changed.sum(1)[0][mask == 1].amax()

    def test_stage_ii_returns_256_pixels_from_any_inversion(self, folder, editor, upscaler, photo):
        """With the upscaler, results are stage II's 256² (the empty prompt, noise level 0, a fixed
        seed: the same pixels decode to the same image); the inversion is stage I's, so one made
        without stage II edits with it."""
        with_stage_ii = Editor.from_pipe(DiffusionPipeline.from_pretrained(folder), upscaler=upscaler, upscaler_steps=2)
        assert with_stage_ii.fingerprint == editor.fingerprint
        inversion = editor.invert(photo, steps=3, seed=0)
        result = with_stage_ii.edit(inversion, "+a red hat")
        assert result.images[0].size == (256, 256) and result.latents.shape[-2:] == (64, 64)
        again = with_stage_ii.decode(result.latents)[0]
        assert np.array_equal(np.asarray(again), np.asarray(result.images[0]))
        assert not np.array_equal(np.asarray(again), np.asarray(with_stage_ii.decode(inversion.source_latents)[0]))

    def test_a_folders_leditspp_json_names_stage_ii_for_the_command_line(self, folder, upscaler, tmp_path):
        """``leditspp edit`` of an IF folder whose ``leditspp.json`` names stage II (2 steps): a 256² PNG."""
        model_folder, stage_ii = tmp_path / "model", tmp_path / "stage-ii"
        shutil.copytree(folder, model_folder)
        upscaler.save_pretrained(stage_ii)
        (model_folder / "leditspp.json").write_text(json.dumps({"upscaler": str(stage_ii), "upscaler_steps": 2}))
        stage_two = Editor.from_pretrained(str(model_folder), device="cpu").model.autoencoder.stage_two
        assert stage_two.pipeline.text_encoder is None and stage_two.steps == 2
        source, out = tmp_path / "photo.png", tmp_path / "out.png"
        scene(80, 120, seed=4).save(source)
        args = ["edit", str(source), "-e", "+a red hat", "--steps", "3", "-o", str(out), "--quiet"]
        assert main([*args, "--model", str(model_folder), "--device", "cpu"]) == 0
        with Image.open(out) as image:
            assert image.size == (256, 256)

    @pytest.mark.parametrize("steps", [0, True, "2"])
    def test_bad_upscaler_steps_are_refused(self, pipe, steps):
        with pytest.raises(LeditsError, match="upscaler_steps must be an integer"):
            Editor.from_pipe(pipe, upscaler_steps=steps)


def test_the_centre_crop_keeps_the_middle_at_the_sizes_aspect():
    tall = torch.arange(120 * 80, dtype=torch.float32).view(1, 120, 80).expand(3, -1, -1)
    assert torch.equal(centre_crop(tall, (64, 64)), tall[:, 20:100])
    assert torch.equal(centre_crop(tall, (64, 32)), tall[:, :, 10:70])  # taller than the image: the sides go
    assert torch.equal(centre_crop(tall, (96, 64)), tall)
