"""Z-Image / Z-Image-Turbo (models/zimage.py): detection, the pipeline's velocity, exactness, masks, CLI."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch

from leditspp import Edit, Editor, LeditsError
from leditspp.masking import MASK_MODES
from leditspp.solvers import NoiseLevel
from leditspp.testing import replay_tolerance
from leditspp.testing.tiny2026 import tiny_zimage_pipeline

from .conftest import scene

#: A concept whose caption needs more than one 32-token block: rows of one call differ in length.
LONG = "a big blue square with a small green circle " * 3


@pytest.fixture(scope="module")
def zimage_pipe():
    pipe = tiny_zimage_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def zimage_folder(zimage_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("zimage")
    zimage_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zimage_editor(zimage_folder):
    return Editor.from_pretrained(str(zimage_folder), device="cpu")


# -- detection and options ---------------------------------------------------------------------------


def test_detected_through_the_registry_and_unusable_options_refused(zimage_folder, zimage_editor, zimage_pipe):
    from leditspp.models import size_multiple_hint
    from leditspp.models.families import family_of, parts_of_folder
    from leditspp.models.zimage import ZImage

    assert family_of(parts_of_folder(zimage_folder)) is ZImage
    assert zimage_editor.model.family == "zimage" and zimage_editor.size_multiple == 16
    assert size_multiple_hint(str(zimage_folder)) == 16
    assert zimage_editor.model.path.describe() == "flow shift 3 pipeline-grid"
    with pytest.raises(LeditsError, match="zimage models do not take mask_level"):
        Editor.from_pipe(zimage_pipe, mask_level=1)
    with pytest.raises(LeditsError, match="zimage models do not take spacing"):
        Editor.from_pretrained(str(zimage_folder), device="cpu", spacing="trailing")
    with pytest.raises(LeditsError, match="max_sequence_length must be"):
        Editor.from_pipe(zimage_pipe, max_sequence_length=0)
    assert Editor.from_pipe(zimage_pipe, max_sequence_length=64).model.encode_prompts(["a"]).embeds.shape[1] == 64


# -- the pipeline's velocity ---------------------------------------------------------------------------


def test_the_velocity_is_what_the_pipelines_scheduler_steps_with(zimage_pipe):
    """Turbo-style (no CFG): v equals the negated transformer output the pipeline hands
    ``scheduler.step``; with CFG, the [cond, uncond] rows (captions of different lengths in one
    call) equal the transformer's two outputs, negated."""
    model = Editor.from_pipe(zimage_pipe).model
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = zimage_pipe.scheduler.step

    def spy(model_output, timestep, sample, **kwargs):
        steps.append((model_output.clone(), timestep.clone(), sample.clone()))
        return original(model_output, timestep, sample, **kwargs)

    calls: list[tuple[list, torch.Tensor, list]] = []

    def hook(module, args, kwargs, output):
        calls.append(([x.clone() for x in args[0]], args[1].clone(), [o.clone() for o in output[0]]))

    prompt = "a photo of a cat in the snow"
    zimage_pipe.scheduler.step = spy
    handle = zimage_pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        for guidance in (0.0, 2.0):
            zimage_pipe(
                prompt, height=64, width=96, num_inference_steps=4, guidance_scale=guidance, output_type="latent",
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
    finally:
        zimage_pipe.scheduler.step = original
        handle.remove()
    assert len(steps) == 8 and len(calls) == 8
    # the pipeline's grid, linspace(1, 1/4, 4) statically shifted: our 3 step times and the end
    path = model.noise_path(8, 12)
    times = torch.cat([path.times(3, 3), path.end(3)]).float()
    assert torch.allclose(torch.stack([t for _, t, _ in steps[:4]]), times, atol=1e-3)
    cond = model.encode_prompts([prompt])
    for v_pipe, t, latents in steps[:4]:
        sigma = t / 1000
        level = NoiseLevel(t[None], (1 - sigma)[None], sigma[None])
        v = model.estimate(latents, level, cond)
        assert v.shape == (1, 16, 8, 12) and (v - v_pipe).abs().max() <= 1e-5
    both = model.encode_prompts([prompt, ""])
    assert both.get("mask").sum(1).tolist() == [
        len(model.text.tokenizer(model_text(model, p)).input_ids) for p in (prompt, "")
    ]
    for x, t_in, outs in calls[4:]:
        latents = torch.stack(x).squeeze(2)
        t = 1000 * (1 - t_in)
        level = NoiseLevel(t, 1 - t_in, t / 1000)
        v = model.estimate(latents, level, both)
        assert (v + torch.stack(outs).squeeze(2)).abs().max() <= 1e-5


def model_text(model, prompt: str) -> str:
    return model.text.template.render(prompt)


# -- exactness -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("solver", "steps"), list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 8])))
def test_reconstruction_is_exact(zimage_editor, solver, steps):
    inv = zimage_editor.invert(scene(64, 64, seed=0), steps=steps, skip=0.0, solver=solver, seed=0)
    assert inv.noise_maps.shape == (steps, 1, 16, 8, 8) and inv.info.family == "zimage"
    assert torch.equal(zimage_editor.edit(inv, [], decode=False).latents, inv.source_latents)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
def test_non_square_source_prompt_batches_and_captions_of_different_lengths(zimage_editor, solver):
    """On 64 × 96 with a source prompt: no edit returns the source exactly, a scale-0 concept
    replays through the transformer within fp32 rounding, and a batch of two with two concepts
    whose captions differ in length (one call, batch-padded) edits each image as it edits alone."""
    images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
    inv = zimage_editor.invert(images, steps=4, skip=0.0, solver=solver, seed=1, source_prompt="a scene")
    assert torch.equal(zimage_editor.edit(inv, [], decode=False).latents, inv.source_latents)
    replay = zimage_editor.edit(inv, [Edit("a red hat", scale=0.0)], mask_mode="none", decode=False).latents
    assert replay.shape[-2:] == (8, 12)
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edits = [Edit("a red hat", scale=6.0, threshold=0.8), Edit(LONG, scale=4.0, remove=True)]
    both = zimage_editor.edit(inv, edits, decode=False)
    assert not torch.allclose(both.latents, inv.source_latents, atol=1e-3)
    for i in range(2):
        alone = zimage_editor.edit(inv.select(i), edits, decode=False).latents
        assert (both.latents[i : i + 1] - alone).abs().max() <= replay_tolerance(alone)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_every_mask_mode_edits(zimage_editor, mode):
    inv = zimage_editor.invert(scene(seed=3), steps=4, skip=0.0, seed=0)
    out = zimage_editor.edit(inv, [Edit("snow", scale=6.0, threshold=0.7), f"-{LONG}"], mask_mode=mode, decode=False)
    assert not torch.allclose(out.latents, inv.source_latents, atol=1e-3)
    share = float(out.mask_means.mean())
    assert share == 1.0 if mode == "none" else 0 < share < 1


# -- the attention mask M¹ -----------------------------------------------------------------------------


def test_token_positions_are_the_concepts_words_inside_the_chat_template(zimage_editor):
    model = zimage_editor.model
    for prompt, words in [("a red hat", ["a", " red", " hat"]), ("user assistant", ["user", " assistant"])]:
        text = model_text(model, prompt)
        ids = model.text.tokenizer(text).input_ids
        positions = model.token_positions(prompt)
        assert [model.text.tokenizer.decode([ids[p]]) for p in positions] == words
        assert positions == list(range(3, len(ids) - 5))  # after <|im_start|>user\n, before the 5-token suffix
    assert model.token_positions("") == []


def test_capture_leaves_the_output_bit_identical(zimage_editor):
    model = zimage_editor.model
    cond = model.encode_prompts(["", LONG])
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    level = NoiseLevel(torch.full((2,), 700.0), torch.full((2,), 0.3), torch.full((2,), 0.7))
    plain = model.estimate(x, level, cond)
    with model.capture_attention() as recorder:
        recorder.arm(slice(1, None), torch.ones(1, cond.embeds.shape[1]))
        captured = model.estimate(x, level, cond)
    assert torch.equal(plain, captured)


# -- the command line and recommended settings -----------------------------------------------------------


def test_the_cli_edits_with_a_zimage_folder(zimage_folder, tmp_path):
    from PIL import Image

    from leditspp.cli import main

    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    scene(64, 96).save(photo)
    args = ["edit", str(photo), "-e", "+red circle", "--model", str(zimage_folder), "--steps", "4"]
    assert main([*args, "--device", "cpu", "-o", str(out), "--quiet"]) == 0
    assert Image.open(out).size == (96, 64) and json.loads(Image.open(out).text["leditspp"])["steps"] == 4


def test_a_turbo_folder_recommends_its_settings_through_leditspp_json(zimage_folder, tmp_path):
    """Z-Image and Z-Image-Turbo ship the same scheduler config, so nothing in the configs says
    "few-step": a Z-Image folder gets its pipeline's 50 steps, a Turbo folder declares its 8 steps
    and no source guidance in ``leditspp.json``."""
    from leditspp.models import model_settings

    turbo = tmp_path / "turbo"
    shutil.copytree(zimage_folder, turbo)
    recommended = {"steps": 8, "skip": 0.0, "source_guidance": 0.0}
    (turbo / "leditspp.json").write_text(json.dumps({"recommended": recommended}))
    assert model_settings(str(zimage_folder)) == {"recommended": {"steps": 50}}
    assert model_settings(str(turbo)) == {"recommended": recommended}
    editor = Editor.from_pretrained(str(turbo), device="cpu")
    assert {k: editor.recommended[k] for k in recommended} == recommended


def test_z_image_turbo_is_known_by_its_hub_id_and_its_cache_folder(zimage_folder, tmp_path, monkeypatch):
    """Without a ``leditspp.json``: the hub id (not downloaded: known by name) and a snapshot in the
    Hugging Face cache (read offline, its folder names the checkpoint) both recommend Turbo's 8 steps."""
    from leditspp.models import CHECKPOINT_RECOMMENDED, model_settings

    turbo = CHECKPOINT_RECOMMENDED["Tongyi-MAI/Z-Image-Turbo"]
    assert turbo == {"steps": 8, "skip": 0.0, "source_guidance": 0.0}
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_settings("Tongyi-MAI/Z-Image-Turbo") == {"recommended": turbo}
    assert model_settings("tongyi-mai/z-image-turbo") == {"recommended": turbo}
    assert model_settings("Tongyi-MAI/Z-Image") == {}  # not cached, no name rule: nothing known before loading
    repo = tmp_path / "hub" / "models--Tongyi-MAI--Z-Image-Turbo"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(zimage_folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert model_settings("Tongyi-MAI/Z-Image-Turbo") == {"recommended": turbo}  # read from the cache
    assert model_settings(str(snapshot)) == {"recommended": turbo}  # the folder, by its cache name
    base = tmp_path / "hub" / "models--Tongyi-MAI--Z-Image"
    shutil.copytree(zimage_folder, base / "snapshots" / ("1" * 40))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("1" * 40)
    assert model_settings("Tongyi-MAI/Z-Image") == {"recommended": {"steps": 50}}  # its configs, from the cache
