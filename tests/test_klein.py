"""FLUX.2 [klein]: detection, parity with ``Flux2KleinPipeline``, exact inversion, masks, the CLI."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from leditspp import Edit, Editor, Inversion, LeditsError
from leditspp.masking import MASK_MODES
from leditspp.models.families import Part, family_of, parts_of_folder
from leditspp.models.klein import Klein, patchify, unpatchify
from leditspp.solvers import NoiseLevel
from leditspp.testing import replay_tolerance

from .conftest import scene


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread is faster for these tiny networks (and kinder to a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def klein_pipe(one_thread):
    from leditspp.testing.tiny2026 import tiny_klein_pipeline

    return tiny_klein_pipeline(seed=0, distilled=True)


@pytest.fixture(scope="module")
def klein_folder(tmp_path_factory, klein_pipe):
    folder = tmp_path_factory.mktemp("tiny-klein")
    klein_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def klein(klein_folder):
    return Editor.from_pretrained(str(klein_folder), device="cpu")


def _level(t: torch.Tensor) -> NoiseLevel:
    """The noise level of flow times ``t = σ·1000`` (R,)."""
    t = t.double()
    return NoiseLevel(t, 1 - t / 1000, t / 1000)


# -- 1. detection ------------------------------------------------------------------------------------


def test_detected_through_the_registry_and_foreign_options_refused(klein, klein_folder, klein_pipe):
    from leditspp.models import size_multiple_hint

    assert isinstance(klein.model, Klein) and klein.model.family == "klein" and klein.model.distilled
    assert family_of(parts_of_folder(klein_folder)) is Klein  # known before loading
    assert klein.size_multiple == 16 == size_multiple_hint(str(klein_folder))  # 8 (VAE) × 2 (patchify)
    assert klein.model.mask_level == 0 and klein.model.mask_grid(4, 6) == (4, 6)
    for option in ({"mask_level": 1}, {"spacing": "trailing"}):
        with pytest.raises(LeditsError, match=f"klein models do not take {next(iter(option))}"):
            Editor.from_pipe(klein_pipe, **option)
    with pytest.raises(LeditsError, match=r"max_sequence_length .*\[1, 512\]"):
        Editor.from_pipe(klein_pipe, max_sequence_length=0)
    assert Editor.from_pipe(klein_pipe, max_sequence_length=64).model.denoiser.text_tokens == 64
    # FLUX.2 [dev] has the same transformer class but a Mistral text encoder: not this family
    parts = parts_of_folder(klein_folder)
    assert family_of({**parts, "text_encoder": Part("Mistral3ForConditionalGeneration", {})}) is None
    base = Editor.from_pipe(type(klein_pipe)(**klein_pipe.components, is_distilled=False))
    assert not base.model.distilled


# -- 2. parity with the pipeline -----------------------------------------------------------------------


def _transformer_calls(pipe, **kwargs):
    """What ``pipe.__call__`` hands its transformer and gets back, call by call."""
    calls = []

    def hook(module, args, inputs, output):
        calls.append((inputs, output[0]))

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        pipe(height=64, width=96, output_type="latent", **kwargs)
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("distilled", [True, False])
def test_velocity_times_and_text_equal_the_pipelines(klein, klein_pipe, distilled):
    """For the latents, times and prompt ``Flux2KleinPipeline`` runs, our estimate is its
    transformer's output; Base's CFG row is our c_∅; the times are the path's (size- and
    steps-dependent μ on the pipeline's grid)."""
    pipe = klein_pipe if distilled else type(klein_pipe)(**klein_pipe.components, is_distilled=False)
    model = klein.model
    latents = torch.randn(1, 128, 4, 6, generator=torch.Generator().manual_seed(0))
    calls = _transformer_calls(pipe, prompt="a red circle", num_inference_steps=3, latents=latents, guidance_scale=4.0)
    assert len(calls) == (3 if distilled else 6)  # Base: a cond and an uncond call per step
    conds = [model.encode_prompts(["a red circle"]), model.unconditional("", 1)]
    for i, (inputs, output) in enumerate(calls):
        x = inputs["hidden_states"].transpose(1, 2).reshape(1, 128, 4, 6)
        cond = conds[i % 2] if not distilled else conds[0]
        assert torch.equal(cond.embeds, inputs["encoder_hidden_states"])
        v = model.estimate(x, _level(inputs["timestep"] * 1000), cond)
        assert (v - output.transpose(1, 2).reshape(1, 128, 4, 6)).abs().max() <= 1e-5
    seen = torch.stack([inputs["timestep"][0] * 1000 for inputs, _ in calls[:: 1 if distilled else 2]]).double()
    path = model.noise_path(4, 6)  # 24 tokens; the 3-step schedule = 2 steps and the end
    assert torch.allclose(torch.cat([path.times(2, 0), path.end(2)]), seen, rtol=1e-6)
    assert path.describe() == "flow empirical-mu tokens 24 pipeline-grid"


def test_encode_and_decode_normalise_like_the_pipeline(klein, klein_pipe):
    x = torch.randn(2, 32, 8, 12)
    assert torch.equal(patchify(x), klein_pipe._patchify_latents(x)) and torch.equal(unpatchify(patchify(x)), x)
    pixels = torch.rand(1, 3, 64, 96) * 2 - 1
    z = klein.model.encode(pixels)
    with torch.no_grad():
        reference = klein_pipe._encode_vae_image(pixels, generator=None)
        bn = klein_pipe.vae.bn
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + klein_pipe.vae.config.batch_norm_eps)
        raw = klein_pipe._unpatchify_latents(z * std + bn.running_mean.view(1, -1, 1, 1))
        decoded = klein_pipe.vae.decode(raw, return_dict=False)[0].clamp(-1, 1)
    assert z.shape == (1, 128, 4, 6) and torch.allclose(z, reference, atol=1e-6)
    assert torch.allclose(klein.model.decode(z), decoded, atol=1e-6)


# -- 3. exactness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("solver", "steps"), list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 8])))
def test_reconstruction_is_exact(klein, solver, steps):
    inv = klein.invert(scene(64, 64), steps=steps, skip=0.0, solver=solver, seed=0)
    assert inv.noise_maps.shape == (steps, 1, 128, 4, 4)
    assert torch.equal(klein.edit(inv, [], decode=False).latents, inv.source_latents)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
def test_non_square_source_prompt_and_batches(klein, solver):
    images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
    inv = klein.invert(images, steps=4, skip=0.0, solver=solver, seed=1, source_prompt="a scene")
    assert inv.source_latents.shape == (2, 128, 4, 6)
    assert torch.equal(klein.edit(inv, [], decode=False).latents, inv.source_latents)
    replay = klein.edit(inv, [Edit("red circle", scale=0.0)], mask_mode="none", decode=False).latents
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edits = [Edit("red circle", scale=6.0, threshold=0.7)]
    both = klein.edit(inv, edits, decode=False).latents
    alone = klein.edit(inv.select(1), edits, decode=False).latents
    assert not torch.allclose(both, inv.source_latents, atol=1e-3)
    assert (both[1:] - alone).abs().max() <= replay_tolerance(alone)


def test_a_saved_inversion_keeps_size_and_steps_and_another_size_is_refused(klein, tmp_path):
    inv = klein.invert(scene(64, 64), steps=4, skip=0.0, seed=0)
    loaded = Inversion.load(inv.save(tmp_path / "klein.inv.safetensors"))
    assert loaded.info.noise_path == "flow empirical-mu tokens 16 pipeline-grid"
    assert (loaded.info.height, loaded.info.width, loaded.info.steps) == (64, 64, 4)
    assert torch.equal(klein.edit(loaded, decode=False).latents, inv.source_latents)
    wide = klein.invert(scene(64, 96), steps=4, skip=0.0, seed=0)
    assert not torch.equal(wide.timesteps, inv.timesteps)  # μ follows the token count
    with pytest.raises(LeditsError, match="timesteps do not match"):
        klein.edit(dataclasses.replace(loaded, timesteps=wide.timesteps), decode=False)


# -- 4. masks ----------------------------------------------------------------------------------------------


def test_token_weights_sit_on_the_concepts_own_tokens_in_the_template(klein, klein_pipe, caplog):
    tokenizer = klein.model.text.tokenizer
    for prompt in ("red circle", "user", "a user with a hat"):  # "user" is also the template's role word
        ids = tokenizer(klein.model.text.template.render(prompt)).input_ids
        positions = klein.model.token_positions(prompt)
        assert positions == list(range(3, 3 + len(positions)))  # after <|im_start|> user \n
        assert [ids[p] for p in positions] == tokenizer(prompt, add_special_tokens=False).input_ids
    short = Editor.from_pipe(klein_pipe, max_sequence_length=8)  # the template alone is 12 tokens
    with caplog.at_level("WARNING", logger="leditspp"):
        short.model.encode_prompts(["red circle"])
    assert "prompt 'red circle' is 14 tokens as the text encoder reads it; it reads only the first 8" in caplog.text
    assert short.model.token_positions("red circle") == [3, 4]
    batch = klein._concepts((Edit("red circle"),), use_attention=True)
    assert batch.token_weights.shape == (1, 512)
    assert batch.token_weights[0].nonzero().flatten().tolist() == klein.model.token_positions("red circle")


@pytest.mark.parametrize("mode", MASK_MODES)
def test_every_mask_mode_edits(klein, mode):
    inv = klein.invert(scene(seed=3), steps=4, skip=0.0, seed=0)
    out = klein.edit(inv, [Edit("red circle", scale=6.0, threshold=0.7), "-a cat"], mask_mode=mode, decode=False)
    assert not torch.allclose(out.latents, inv.source_latents, atol=1e-3)
    share = float(out.mask_means.mean())
    assert share == 1.0 if mode == "none" else 0 < share < 1


# -- 5. the command line -----------------------------------------------------------------------------------


def test_the_cli_edits_with_a_klein_folder(klein_folder, tmp_path):
    import json

    from PIL import Image

    from leditspp.cli import main

    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    scene(64, 96).save(photo)
    args = ["edit", str(photo), "-e", "+red circle", "--model", str(klein_folder), "-o", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    written = Image.open(out)
    assert written.size == (96, 64)
    assert json.loads(written.text["leditspp"])["steps"] == 4  # the distilled checkpoint's recommendation


# -- 6. recommended settings ------------------------------------------------------------------------------


def test_the_distilled_checkpoint_recommends_its_four_steps(klein, klein_folder, tmp_path):
    """model_index.json's ``is_distilled`` → 4 steps, no skip, no source guidance (the CLI, the
    web UI and ``Editor.from_pretrained`` read it; ``from_pipe`` reads the loaded pipeline's
    config); [klein] Base gets its pipeline's 50 steps."""
    import json
    import shutil

    from leditspp import defaults
    from leditspp.models import model_settings

    distilled = {"steps": 4, "skip": 0.0, "source_guidance": 0.0}
    assert model_settings(str(klein_folder)) == {"recommended": distilled}
    assert {k: klein.recommended[k] for k in distilled} == distilled
    assert klein.recommended["solver"] == defaults.SOLVER
    from leditspp.testing.tiny2026 import tiny_klein_pipeline

    assert Editor.from_pipe(tiny_klein_pipeline(distilled=False)).recommended["steps"] == 50
    base = tmp_path / "klein-base"
    shutil.copytree(klein_folder, base)
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}))
    assert model_settings(str(base)) == {"recommended": {"steps": 50}}
    (base / "leditspp.json").write_text(json.dumps({"recommended": {"scale": 5.0, "steps": 28}}))
    assert model_settings(str(base)) == {"recommended": {"steps": 28, "scale": 5.0}}
