"""Qwen-Image (``QwenImagePipeline``): detection, the velocity against the pipeline's own, exact
reconstruction, joint-attention masks with the text mask, the CLI and saved inversions.

One tiny pipeline (:func:`leditspp.testing.tiny2026.tiny_qwenimage_pipeline`) written with
``save_pretrained`` and loaded back through ``Editor.from_pretrained``, for the whole module.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from leditspp import Edit, Editor, Inversion, LeditsError
from leditspp.masking import MASK_MODES
from leditspp.models.qwenimage import DROP, TEMPLATE, QwenImage
from leditspp.solvers import NoiseLevel
from leditspp.testing import replay_tolerance

from .conftest import scene


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread is faster for these tiny shapes on a shared machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory, one_thread):
    from leditspp.testing.tiny2026 import tiny_qwenimage_pipeline

    folder = tmp_path_factory.mktemp("tiny-qwenimage")
    tiny_qwenimage_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen_editor(qwen_folder):
    return Editor.from_pretrained(str(qwen_folder), device="cpu")


@pytest.fixture(scope="module")
def qwen_pipe(qwen_editor, qwen_folder):
    """diffusers' own ``QwenImagePipeline`` on the editor's very modules."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    model = qwen_editor.model
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(qwen_folder / "scheduler")
    pipe = QwenImagePipeline(
        scheduler, model.autoencoder.vae, model.text.text_encoder, model.text.tokenizer, model.denoiser.transformer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- 1. detection and options ------------------------------------------------------------------------


def test_detected_through_the_registry_and_options_it_cannot_use_are_refused(
    qwen_folder, qwen_editor, qwen_pipe, caplog
):
    from leditspp.models import FAMILIES, model_settings, size_multiple_hint
    from leditspp.models.families import family_of, parts_of_folder

    assert QwenImage in FAMILIES and family_of(parts_of_folder(qwen_folder)) is QwenImage
    assert size_multiple_hint(str(qwen_folder)) == 16  # VAE factor 8 (3 temporal entries) × the 2×2 packing
    assert qwen_editor.model.family == "qwenimage" and qwen_editor.size_multiple == 16
    assert model_settings(str(qwen_folder)) == {"recommended": {"steps": 50}}  # its pipeline's step count
    assert qwen_editor.recommended["steps"] == 50
    assert qwen_editor.model.noise_path(8, 8).describe() == "flow mu 0.487903 pipeline-grid terminal 0.02"
    for option in ({"mask_level": 2}, {"spacing": "trailing"}):
        with pytest.raises(LeditsError, match="qwenimage models do not take"):
            Editor.from_pipe(qwen_pipe, **option)
    for bad in (0, 2000, True, "64"):
        with pytest.raises(LeditsError, match=r"max_sequence_length must be an integer in \[1, 1024\]"):
            Editor.from_pipe(qwen_pipe, max_sequence_length=bad)
    short = Editor.from_pipe(qwen_pipe, max_sequence_length=24).model
    assert short.encode_prompts(["a red circle"]).embeds.shape == (1, 24, 32) and short.denoiser.text_tokens == 24
    long = "a red circle " * 10
    with caplog.at_level("WARNING", logger="leditspp"):
        cut = short.encode_prompts([long])
    assert "reads only the first 24" in caplog.text and bool(cut.get("mask").all())
    assert short.token_positions(long) == list(range(24))


# -- 2. the velocity is the pipeline's ---------------------------------------------------------------


def test_velocity_equals_what_the_pipeline_gets_from_its_transformer(qwen_editor, qwen_pipe):
    """The pipeline's transformer calls (unpadded prompts; a mask only where two prompts differ in
    length) against our estimate on the same latents and σ (every prompt padded to 512, masked)."""
    from leditspp.models.flux import unpack

    model = qwen_editor.model
    calls = []

    def spy(module, args, kwargs, output):
        calls.append({**kwargs, "output": output[0]})

    handle = model.denoiser.transformer.register_forward_hook(spy, with_kwargs=True)
    try:
        for prompts in (["a red circle"], ["a red circle", "a yellow cat wearing sunglasses"]):
            qwen_pipe(prompts, height=64, width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(calls) == 4 and calls[0]["encoder_hidden_states_mask"] is None
    assert calls[2]["encoder_hidden_states"].shape[1] < 512 and not calls[2]["encoder_hidden_states_mask"].all()
    cond = model.encode_prompts(["a red circle", "a yellow cat wearing sunglasses"])
    assert cond.embeds.shape[1] == 512 and cond.get("mask").sum(1).tolist() == [8, 10]
    for call in calls:
        rows = call["hidden_states"].shape[0]
        sigma = call["timestep"].double()
        level = NoiseLevel(sigma * 1000, 1 - sigma, sigma)
        x = unpack(call["hidden_states"], 8, 8)
        ours = model.estimate(x, level, cond.map(lambda t, n=rows: t[:n]))
        theirs = unpack(call["output"].float(), 8, 8)
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()


def test_latents_are_the_img2img_pipelines_and_decode_undoes_them(qwen_editor, monkeypatch):
    """encode = ``QwenImageImg2ImgPipeline._encode_vae_image`` (posterior mode, per-channel
    ``(z − mean)·(1/std)``) without the frame axis; decode undoes exactly that normalisation."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_img2img as img2img

    model = qwen_editor.model
    pixels = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mode = img2img.retrieve_latents
    monkeypatch.setattr(img2img, "retrieve_latents", lambda out, generator=None: mode(out, sample_mode="argmax"))
    pipe = img2img.QwenImageImg2ImgPipeline(
        None, model.autoencoder.vae, model.text.text_encoder, model.text.tokenizer, model.denoiser.transformer
    )
    theirs = pipe._encode_vae_image(pixels[:, :, None], generator=None)
    ours = model.encode(pixels)
    assert ours.shape == (2, 16, 8, 12) and theirs.shape == (2, 16, 1, 8, 12)
    assert torch.allclose(ours, theirs[:, :, 0], atol=1e-6, rtol=0)
    raw = model.autoencoder.vae.encode(pixels[:, :, None]).latent_dist.mode()
    direct = model.autoencoder.vae.decode(raw).sample[:, :, 0].clamp(-1, 1)
    assert torch.allclose(model.decode(ours), direct, atol=1e-5, rtol=0)


def test_rows_keep_each_prompts_mask(qwen_editor):
    """Repeated and stacked rows carry their own masks (the pipeline's ``num_images_per_prompt``
    pairs them with the wrong prompts; ours are repeated key by key), and the padding is zeros."""
    from leditspp.models.base import Conditioning

    model = qwen_editor.model
    rows = Conditioning.cat([model.unconditional("", 2), model.encode_prompts(["a red circle", "a blue square"])])
    rows = rows.repeat_rows(2)
    mask = rows.get("mask")
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [5, 5, 5, 5, 8, 8, 8, 8]
    assert not rows.embeds[~mask].any() and rows.embeds[mask].abs().amin(-1).gt(0).any()


# -- 3. exactness ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("solver", "steps"), list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 8])))
def test_reconstruction_is_exact(qwen_editor, solver, steps):
    inv = qwen_editor.invert(scene(), steps=steps, skip=0.0, solver=solver, seed=0)
    assert inv.noise_maps.shape == (steps, 1, 16, 8, 8) and inv.noise_maps.isfinite().all()
    assert torch.equal(qwen_editor.edit(inv, [], decode=False).latents, inv.source_latents)


def test_one_step_ends_at_the_terminal_sigma_where_the_pipelines_own_schedule_is_nan(qwen_editor, qwen_pipe):
    """With N = 1 the pipeline's sigmas [1] make shift_terminal divide 0 by 0; our path's N + 1
    grid points give the one step σ = 1 and its end σ = 0.02."""
    from leditspp.solvers import step_table

    path = qwen_editor.model.noise_path(8, 8)
    with pytest.warns(RuntimeWarning, match="invalid value encountered in divide"):
        qwen_pipe.scheduler.set_timesteps(sigmas=[1.0], mu=path.mu)
    assert qwen_pipe.scheduler.sigmas[0].isnan()
    table = step_table("ddpm", path, 1, 0.0)
    assert abs(float(table.timesteps[0]) - 1000.0) < 1e-9 and abs(float(table.end) - 20.0) < 1e-9


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
def test_non_square_batches_source_prompt_and_concepts_of_different_lengths(qwen_editor, solver):
    """64 × 96 with a source prompt: exact without edits, a scale-0 concept replays through the
    transformer, two concepts of different token lengths in one call edit, and each image of a
    batch of 2 edits as it does alone."""
    images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
    inv = qwen_editor.invert(images, steps=4, skip=0.0, solver=solver, seed=1, source_prompt="a scene")
    assert inv.source_latents.shape == (2, 16, 8, 12)
    assert torch.equal(qwen_editor.edit(inv, [], decode=False).latents, inv.source_latents)
    replay = qwen_editor.edit(inv, [Edit("a red circle", scale=0.0)], mask_mode="none", decode=False).latents
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edits = [Edit("a red circle", scale=6.0, threshold=0.7), Edit("a yellow cat wearing sunglasses", remove=True)]
    both = qwen_editor.edit(inv, edits, decode=False)
    assert not torch.allclose(both.latents, inv.source_latents, atol=1e-3)
    for i in range(2):
        alone = qwen_editor.edit(inv.select(i), edits, decode=False).latents
        assert (both.latents[i : i + 1] - alone).abs().max() <= replay_tolerance(alone)


# -- 4. masks ----------------------------------------------------------------------------------------


def test_token_weights_sit_on_the_concepts_own_tokens_after_the_dropped_template(qwen_editor):
    model = qwen_editor.model
    tokenizer = model.text.tokenizer
    prefix = tokenizer(TEMPLATE.split("{}")[0]).input_ids
    assert len(prefix) == DROP == 34  # the pipeline's prompt_template_encode_start_idx
    for prompt, words in (("a red circle", ["a", " red", " circle"]), ("a purple dog wearing a hat", None)):
        positions = model.token_positions(prompt)
        ids = tokenizer(TEMPLATE.format(prompt)).input_ids
        assert ids[:DROP] == prefix and positions == list(range(len(tokenizer(prompt).input_ids)))
        assert [ids[DROP + p] for p in positions] == tokenizer(prompt).input_ids
        if words:
            assert [tokenizer.decode([ids[DROP + p]]) for p in positions] == words
        # the conditioning's rows at these positions are the encoder's states of those tokens
        states = model.text.text_encoder(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        embeds = model.encode_prompts([prompt]).embeds[0]
        assert torch.allclose(embeds[positions], states[[DROP + p for p in positions]], atol=1e-6)
    edits = (Edit("a red circle"), Edit("a yellow cat wearing sunglasses"))
    weights = qwen_editor._concepts(edits, use_attention=True).token_weights
    assert weights.shape == (2, 512)
    assert weights[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert weights[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_capture_leaves_the_output_bit_identical(qwen_editor):
    """The capture wrapper passes the text mask and the rotary embedding on: the same network runs."""
    model = qwen_editor.model
    cond = model.encode_prompts(["", "a red circle"])
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    level = NoiseLevel(torch.tensor([700.0, 700.0]), torch.full((2,), 0.3), torch.full((2,), 0.7))
    plain = model.estimate(x, level, cond)
    with model.capture_attention() as recorder:
        recorder.arm(slice(1, None), torch.ones(1, 512))
        captured = model.estimate(x, level, cond)
    assert torch.equal(plain, captured)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_every_mask_mode_edits(qwen_editor, mode):
    inv = qwen_editor.invert(scene(seed=3), steps=4, skip=0.0, seed=0)
    edits = [Edit("a red circle", scale=6.0, threshold=0.7), "-a yellow cat wearing sunglasses"]
    out = qwen_editor.edit(inv, edits, mask_mode=mode, decode=False)
    assert out.latents.isfinite().all() and not torch.allclose(out.latents, inv.source_latents, atol=1e-3)
    share = float(out.mask_means.mean())
    assert share == 1.0 if mode == "none" else 0 < share < 1


# -- 5. the command line -----------------------------------------------------------------------------


def test_the_cli_edits_with_a_qwenimage_folder(qwen_folder, tmp_path):
    import json

    from PIL import Image

    from leditspp.cli import main

    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    scene(64, 96).save(photo)
    args = ["edit", str(photo), "-e", "+red circle", "--model", str(qwen_folder), "-o", str(out)]
    assert main([*args, "--steps", "4", "--device", "cpu", "--quiet"]) == 0
    assert Image.open(out).size == (96, 64) and json.loads(Image.open(out).text["leditspp"])["steps"] == 4


# -- 6. saved inversions -----------------------------------------------------------------------------


def test_a_saved_inversion_keeps_its_path_and_another_size_is_refused(qwen_editor, tmp_path):
    square = qwen_editor.invert(scene(), steps=4, skip=0.0, seed=0)
    loaded = Inversion.load(square.save(tmp_path / "qwen.inv.safetensors"))
    described = qwen_editor.model.noise_path(8, 8).describe()
    assert loaded.info.noise_path == described and "pipeline-grid terminal 0.02" in described
    assert loaded.info.family == "qwenimage" and torch.equal(loaded.timesteps, square.timesteps)
    assert torch.equal(qwen_editor.edit(loaded, decode=False).latents, square.source_latents)
    wide = qwen_editor.invert(scene(64, 96), steps=4, skip=0.0, seed=0)
    assert not torch.equal(wide.timesteps, square.timesteps)  # μ follows the token count
    stacks = (wide.noisy_latents, wide.denoised, wide.noise_maps)
    resized = Inversion(*stacks, square.timesteps, wide.source_latents, square.info)  # 64×96 under 64×64's times
    with pytest.raises(LeditsError, match="timesteps do not match"):
        qwen_editor.edit(resized, decode=False)
