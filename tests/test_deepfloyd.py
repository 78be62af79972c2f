"""DeepFloyd IF, the paper's third model, on the tiny offline IF pipelines: detection, the
pixel-space stage I (centre crop, ε split from the learned variance, exact inversion for both
solvers, masks from the 8×8 attention maps), stage II to 256², and every front end."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp import Editor, LeditsError
from leditspp.cli import main
from leditspp.io import as_pixel_batch, centre_crop, resize_pixels, to_pil
from leditspp.model_options import ModelOptions
from leditspp.models import DeepFloydIF, model_settings
from leditspp.models.families import family_of, parts_of_folder, size_multiple_of_folder
from leditspp.solvers import NoiseLevel

from .conftest import scene

STEPS = 3


@pytest.fixture(scope="module")
def upscaler(tokenizer_if):
    from leditspp.testing.tiny_if import tiny_if_superresolution_pipeline

    return tiny_if_superresolution_pipeline(tokenizer_if, seed=0)


@pytest.fixture(scope="module")
def upscaler_folder(tmp_path_factory, upscaler):
    folder = tmp_path_factory.mktemp("tiny-if-ii")
    upscaler.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photo():
    """Wider than tall, so the centre crop shows."""
    return scene(80, 120, seed=4)


def test_the_tiny_pipelines_generate_with_their_own_call(tokenizer_if, upscaler):
    from leditspp.testing.tiny_if import tiny_if_pipeline

    generator = torch.Generator().manual_seed(0)
    low = tiny_if_pipeline(tokenizer_if)("a red hat", num_inference_steps=2, output_type="pt", generator=generator)
    assert low.images.shape == (1, 3, 64, 64) and torch.isfinite(low.images).all()
    high = upscaler(image=low.images, prompt="a red hat", num_inference_steps=2, output_type="pt", generator=generator)
    assert high.images.shape == (1, 3, 256, 256) and torch.isfinite(high.images).all()


def test_an_if_folder_is_told_by_its_configs(if_folder, if_editor):
    parts = parts_of_folder(if_folder)
    assert "vae" not in parts and family_of(parts) is DeepFloydIF
    assert size_multiple_of_folder(if_folder, {}) == 8 and size_multiple_of_folder(if_folder, {"mask_level": 2}) == 4
    assert model_settings(str(if_folder))["recommended"] == {"steps": 100, "skip": 0.15}
    model = if_editor.model
    assert model.family == "deepfloyd-if" and model.mask_grid(64, 64) == (8, 8) and if_editor.size_multiple == 8
    assert if_editor.recommended["steps"] == 100 and set(model.components()) == {"unet", "text_encoder"}
    from diffusers import IFPipeline

    assert inspect.signature(IFPipeline.__call__).parameters["num_inference_steps"].default == 100


def test_a_stage_ii_model_given_as_the_model_is_refused(upscaler):
    with pytest.raises(LeditsError, match=r"super-resolution stage.*upscaler option"):
        Editor.from_pipe(upscaler)


def test_other_families_refuse_the_upscaler_option(editor, upscaler):
    with pytest.raises(LeditsError, match="do not take upscaler"):
        Editor.from_pipe(editor.pipeline, upscaler=upscaler)


def test_the_estimate_is_the_noise_half_of_the_unets_six_channels(if_editor):
    """ε is the first 3 of the 6 output channels (the others: the learned variance, not used)."""
    model = if_editor.model
    cond = model.encode_prompts(["", "a red hat"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0, 300.0])
    a, s = model.path.levels(t)
    eps = model.estimate(x, NoiseLevel(t, a.float(), s.float()), cond)
    out = model.denoiser.unet(x, t, encoder_hidden_states=cond.embeds).sample
    assert out.shape[1] == 6 and eps.shape == x.shape
    assert torch.equal(eps, out[:, :3]) and not torch.allclose(out[:, :3], out[:, 3:], atol=1e-2)


def test_the_data_prediction_is_the_schedulers_own(if_editor, if_folder):
    """x̂0 of an estimate equals IF's DDPM scheduler's ``pred_original_sample`` (thresholding off,
    as the authors sample IF; clipping off), on IF's squaredcos noise path."""
    from diffusers import DDPMScheduler

    model = if_editor.model
    scheduler = DDPMScheduler.from_pretrained(if_folder, subfolder="scheduler", thresholding=False, clip_sample=False)
    x, eps, variance = torch.randn(3, 1, 3, 16, 16, generator=torch.Generator().manual_seed(2)).unbind(0)
    for t in (999, 500, 17):
        a, s = model.path.levels(torch.tensor([float(t)]))
        mine = model.to_data(eps, x, NoiseLevel(torch.tensor([float(t)]), a.float(), s.float()))
        theirs = scheduler.step(torch.cat([eps, variance], dim=1), t, x).pred_original_sample
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
def test_no_concept_reconstructs_the_centre_cropped_input_exactly(if_editor, photo, solver):
    """Stage I sees the input as the authors give it to IF (centre-cropped to a square, resized to
    64²), and with no concept returns exactly those pixels."""
    inversion = if_editor.invert(photo, steps=STEPS, solver=solver, seed=0)
    [pixels] = as_pixel_batch(photo)
    expected = resize_pixels([centre_crop(pixels, (64, 64))], (64, 64)) * 2 - 1
    assert pixels.shape[1:] == (80, 120) and centre_crop(pixels, (64, 64)).shape[1:] == (80, 80)
    assert torch.equal(inversion.source_latents, expected) and (inversion.info.height, inversion.info.width) == (64, 64)
    result = if_editor.edit(inversion)
    assert torch.equal(result.latents, inversion.source_latents)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(to_pil(expected)[0]))


def test_an_edit_changes_the_image_where_its_8x8_attention_mask_is(if_editor, photo):
    inversion = if_editor.invert(photo, steps=STEPS, seed=0)
    result = if_editor.edit(inversion, "+a red hat", mask_mode="attention")
    changed = (result.latents - inversion.source_latents).abs()
    mask = result.masks[0, 0]
    blocks = mask.view(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)  # each 8×8 cell of one M¹ entry
    assert result.masks.shape == (1, 1, 64, 64) and torch.equal(blocks, blocks[:, :1].expand(-1, 64))
    assert 0 < mask.mean() < 1 and changed.amax() > 0.1
    assert changed.sum(1)[0][mask == 0].amax() < changed.sum(1)[0][mask == 1].amax()


def test_stage_ii_returns_256_pixels_from_any_inversion(if_folder, if_editor, upscaler, photo):
    """With the upscaler, results are stage II's 256² (the empty prompt, noise level 0, a fixed
    seed: the same pixels decode to the same image); the inversion is stage I's, so one made
    without stage II edits with it."""
    from diffusers import DiffusionPipeline

    with_stage_ii = Editor.from_pipe(DiffusionPipeline.from_pretrained(if_folder), upscaler=upscaler, upscaler_steps=2)
    assert with_stage_ii.fingerprint == if_editor.fingerprint
    inversion = if_editor.invert(photo, steps=STEPS, seed=0)
    result = with_stage_ii.edit(inversion, "+a red hat")
    assert result.images[0].size == (256, 256) and result.latents.shape[-2:] == (64, 64)
    again = with_stage_ii.decode(result.latents)[0]
    assert np.array_equal(np.asarray(again), np.asarray(result.images[0]))
    assert not np.array_equal(np.asarray(again), np.asarray(with_stage_ii.decode(inversion.source_latents)[0]))


def test_an_upscaler_of_another_kind_is_refused(if_folder, if_editor):
    from diffusers import DiffusionPipeline

    with pytest.raises(LeditsError, match="must be a DeepFloyd IF stage II model"):
        Editor.from_pipe(DiffusionPipeline.from_pretrained(if_folder), upscaler=if_editor.model.text.text_encoder)


@pytest.fixture(scope="module")
def if_folder_with_stage_ii(tmp_path_factory, if_folder, upscaler_folder):
    """The tiny IF with its ``leditspp.json`` naming the tiny stage II as its upscaler."""
    folder = tmp_path_factory.mktemp("if-with-ii") / "model"
    shutil.copytree(if_folder, folder)
    (folder / "leditspp.json").write_text(json.dumps({"upscaler": str(upscaler_folder), "upscaler_steps": 2}))
    return folder


def test_a_folders_leditspp_json_names_stage_ii_for_the_command_line(if_folder_with_stage_ii, photo, tmp_path):
    """``leditspp edit`` of an IF folder whose ``leditspp.json`` names stage II (2 steps): a 256² PNG."""
    stage_two = Editor.from_pretrained(str(if_folder_with_stage_ii), device="cpu").model.autoencoder.stage_two
    assert stage_two.pipeline.text_encoder is None and stage_two.steps == 2
    source, out = tmp_path / "photo.png", tmp_path / "out.png"
    photo.save(source)
    args = ["edit", str(source), "-e", "+a red hat", "--steps", "3", "-o", str(out), "--quiet"]
    assert main([*args, "--model", str(if_folder_with_stage_ii), "--device", "cpu"]) == 0
    with Image.open(out) as im:
        assert im.size == (256, 256)


@pytest.mark.parametrize("steps", [0, True, "2"])
def test_bad_upscaler_steps_are_refused(if_folder, steps):
    from diffusers import DiffusionPipeline

    with pytest.raises(LeditsError, match="upscaler_steps must be an integer"):
        Editor.from_pipe(DiffusionPipeline.from_pretrained(if_folder), upscaler_steps=steps)


def test_the_command_line_inverts_and_edits_an_if_model(if_folder, photo, tmp_path, capsys):
    """``invert`` then ``edit --inversion`` (the saved inversion); the PNG's recipe re-runs to the
    same image."""
    source = tmp_path / "photo.png"
    photo.save(source)
    inversion, out, again = tmp_path / "x.safetensors", tmp_path / "out.png", tmp_path / "again.png"
    common = ["--model", str(if_folder), "--device", "cpu", "--quiet"]
    assert main(["invert", str(source), "-o", str(inversion), "--steps", "3", *common]) == 0, capsys.readouterr().err
    assert main(["edit", "--inversion", str(inversion), "-e", "+a red hat", "-o", str(out), *common]) == 0
    with Image.open(out) as im:
        assert im.size == (64, 64) and json.loads(im.text["leditspp"])["steps"] == 3
    assert main(["edit", str(source), "--recipe", str(out), "-o", str(again), *common]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_the_web_ui_edits_with_an_if_model(if_folder, photo):
    from leditspp.webui import EditorService, run_edit

    settings = {"steps": 3, "skip": 0.15, "solver": "ddpm", "seed": 0, "source_prompt": "", "source_guidance": 3.5}
    service = EditorService(model=str(if_folder), options=ModelOptions(device="cpu"))
    edited, overlays, reconstruction, _png, _status = run_edit(
        service, photo, [["a red hat", "+", 5, 0.9, 0, None]], {**settings, "mask_mode": "intersect"}
    )
    assert edited.size == reconstruction.size == (64, 64) and len(overlays) == 1
    assert not np.array_equal(np.asarray(edited), np.asarray(reconstruction))


def test_the_shapes_evaluation_runs_on_an_if_model(if_folder, tmp_path):
    """The built-in suite's 128² scenes, edited at 64² and measured at 128²."""
    from leditspp.evaluation import evaluate

    out = tmp_path / "eval"
    options = {"quiet": True, "scenes": 1, "limit": 2, "settings": {"steps": 2}}
    run = evaluate("shapes", out=out, model=str(if_folder), options=ModelOptions(device="cpu"), **options)
    assert run.stats.done == run.stats.total > 0 and run.stats.failed == 0
    assert (out / "metrics.csv").is_file() and run.summary


def test_the_centre_crop_keeps_the_middle_at_the_sizes_aspect():
    tall = torch.arange(120 * 80, dtype=torch.float32).view(1, 120, 80).expand(3, -1, -1)
    assert torch.equal(centre_crop(tall, (64, 64)), tall[:, 20:100])
    assert torch.equal(centre_crop(tall, (64, 32)), tall[:, :, 10:70])  # taller than the image: the sides go
    assert torch.equal(centre_crop(tall, (96, 64)), tall)


def test_prompts_are_lower_cased_and_stripped_as_ifs_pipelines_give_them_to_t5(if_editor):
    model = if_editor.model
    shouted = model.encode_prompts(["  A RED Hat "]).embeds
    assert torch.equal(shouted, model.encode_prompts(["a red hat"]).embeds)
    assert model.token_positions("  A RED Hat ") == model.token_positions("a red hat") == [0, 1, 2]


def test_only_a_family_that_declares_it_goes_without_a_vae(editor):
    """IF needs no VAE (its ``required``); SD without its VAE is still refused before it is built."""
    components = dict(editor.pipeline.components, vae=None)
    with pytest.raises(LeditsError, match="the model lacks vae; supported families"):
        Editor.from_pipe(components)
    assert "vae" not in DeepFloydIF.required


def test_the_text_conditions_are_what_ifs_own_pipeline_gives_its_unet(if_folder, if_editor):
    """``IFPipeline.__call__``'s UNet input for a prompt with guidance: [c_∅; c] as ours encode them."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(if_folder)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"]), with_kwargs=True)
    pipe("A Red Hat ", num_inference_steps=1, guidance_scale=7.0, clean_caption=False, output_type="pt")
    model = if_editor.model
    ours = torch.cat([model.unconditional("", 1).embeds, model.encode_prompts(["A Red Hat "]).embeds])
    assert len(seen) == 1 and torch.equal(seen[0], ours)
