"""Chroma (``ChromaPipeline``): detection, the pipeline's own velocity, exactness, masks, the CLI.

The tiny pipeline (:func:`leditspp.testing.tiny2026.tiny_chroma_pipeline`) is saved once and loaded
through ``Editor.from_pretrained`` like any folder. The reference for the estimate is the
transformer called the way ``ChromaPipeline.__call__`` calls it, with the pipeline's own text
embeddings, ids and float 0/1 attention mask (which SDPA adds to the logits: diffusers#12116).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp import Conditioning, Edit, Editor, LeditsError, defaults
from leditspp.masking import MASK_MODES
from leditspp.models import model_settings, supported
from leditspp.models.families import adapter_from_components, family_of, parts_of_folder
from leditspp.models.flux import pack, unpack
from leditspp.solvers import NoiseLevel
from leditspp.testing import replay_tolerance
from leditspp.testing.tiny2026 import tiny_chroma_pipeline

from .conftest import scene


@pytest.fixture(scope="module")
def chroma_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chroma")
    tiny_chroma_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chroma(chroma_folder):
    return Editor.from_pretrained(str(chroma_folder), device="cpu")


@pytest.fixture(scope="module")
def pipe(chroma, chroma_folder):
    """A ``ChromaPipeline`` around the editor's own modules (the same weights, bit for bit)."""
    from diffusers import ChromaPipeline, FlowMatchEulerDiscreteScheduler

    model = chroma.model
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(chroma_folder / "scheduler"))
    parts = {
        "transformer": model.denoiser.transformer,
        "vae": model.autoencoder.vae,
        "text_encoder": model.text.text_encoder,
    }
    pipe = ChromaPipeline(
        scheduler=scheduler, tokenizer=model.text.tokenizer, image_encoder=None, feature_extractor=None, **parts
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _level(t: torch.Tensor) -> NoiseLevel:
    sigma = t.double() / 1000
    return NoiseLevel(t.double(), (1 - sigma).float(), sigma.float())


# -- 1. detection and refusals ------------------------------------------------------------------------


def test_chroma_is_detected_by_the_registry_and_refuses_what_it_cannot_use(chroma, chroma_folder, pipe):
    parts = parts_of_folder(chroma_folder)
    assert family_of(parts).family == "chroma"  # from the JSON files, before loading
    assert chroma.model.family == "chroma" and chroma.size_multiple == 16  # VAE 8 × the 2×2 packing
    assert chroma.model.condition_keys == ("embeds", "mask")
    assert "Chroma (ChromaTransformer2DModel" in supported()
    # A true-CFG model on FLUX.1-dev's scheduler config: its pipeline's 35 steps, no few-step settings.
    assert model_settings(str(chroma_folder)) == {"recommended": {"steps": 35}}
    assert chroma.recommended["steps"] == 35 and chroma.recommended["skip"] == defaults.SKIP
    for option in ("mask_level", "spacing"):
        with pytest.raises(LeditsError, match=f"chroma models do not take {option}"):
            Editor.from_pipe(pipe, **{option: 1 if option == "mask_level" else "trailing"})
    with pytest.raises(LeditsError, match="max_sequence_length must be an integer in"):
        Editor.from_pipe(pipe, max_sequence_length=600)
    assert Editor.from_pipe(pipe, max_sequence_length=64).model.denoiser.text_tokens == 64
    components = dict(pipe.components)
    with pytest.raises(LeditsError, match=r"lacks its T5 text_encoder; supported families: .*Chroma"):
        adapter_from_components({**components, "text_encoder": None})
    with pytest.raises(LeditsError, match=r"Linear models .* not supported; supported families: .*Chroma"):
        adapter_from_components({**components, "transformer": torch.nn.Linear(2, 2)})


# -- 2. the velocity the pipeline's transformer computes --------------------------------------------


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


def test_the_estimate_is_the_velocity_the_pipeline_computes(chroma, pipe):
    model = chroma.model
    x = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700.0, 300.0])
    prompts = ["a red circle on a blue square", ""]
    ours = model.estimate(x, _level(t), model.encode_prompts(prompts))
    for row, prompt in enumerate(prompts):
        reference = _pipeline_velocity(pipe, x[row : row + 1], t[row], prompt)
        assert (ours[row] - reference[0]).abs().max() <= 1e-5, prompt
    # The mask reaches the blocks: without it (or with the intended bool mask) the network differs.
    cond = model.encode_prompts(prompts[:1])
    unmasked = model.denoiser.transformer(
        hidden_states=pack(x[:1]),
        timestep=t[:1] / 1000,
        encoder_hidden_states=cond.embeds,
        txt_ids=torch.zeros(cond.embeds.shape[1], 3),
        img_ids=model.denoiser._image_ids(8, 12, x.device),
        return_dict=False,
    )[0]
    assert (unpack(unmasked, 8, 12) - ours[:1]).abs().max() > 1e-3


def test_a_generation_with_the_pipeline_is_our_guided_euler_steps(chroma, pipe):
    """The pipeline's true-CFG generation (two transformer calls, ``neg + g(cond − neg)``, Euler)
    replayed with our estimates on its own timesteps."""
    model = chroma.model
    x = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(1))
    prompt, scale = "a red circle", 5.0
    settings = {"height": 64, "width": 96, "num_inference_steps": 3, "guidance_scale": scale}
    reference = unpack(pipe(prompt, latents=pack(x), output_type="latent", **settings).images, 8, 12)
    conditioning = Conditioning.cat([model.unconditional("", 1), model.encode_prompts([prompt])])
    sigmas = pipe.scheduler.sigmas
    for i, t in enumerate(pipe.scheduler.timesteps):
        v_neg, v_cond = model.estimate(x.repeat(2, 1, 1, 1), _level(t.expand(2)), conditioning).chunk(2)
        x = x + (sigmas[i + 1] - sigmas[i]) * (v_neg + scale * (v_cond - v_neg))
    assert (x - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())


# -- 3. exactness ----------------------------------------------------------------------------------------

GRID = list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 8], ["", "a photo"]))


@pytest.mark.parametrize(("solver", "steps", "source"), GRID)
def test_chroma_reconstruction_is_exact(chroma, solver, steps, source):
    inv = chroma.invert(scene(64, 64, seed=steps), steps=steps, solver=solver, seed=0, source_prompt=source)
    assert inv.info.family == "chroma" and inv.info.noise_path.startswith("flow mu")
    assert inv.noise_maps.shape == (steps, 1, 16, 8, 8)
    assert torch.equal(chroma.edit(inv, [], decode=False).latents, inv.source_latents)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
def test_chroma_non_square_batch_replays_and_edits_each_image_as_alone(chroma, solver):
    images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
    inv = chroma.invert(images, steps=4, solver=solver, seed=1, source_prompt="a scene")
    assert torch.equal(chroma.edit(inv, [], decode=False).latents, inv.source_latents)
    replay = chroma.edit(inv, [Edit("red circle", scale=0.0)], mask_mode="none", decode=False).latents
    assert replay.shape[-2:] == (8, 12)
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edits = [Edit("red circle", scale=6.0, threshold=0.7)]
    both = chroma.edit(inv, edits, decode=False).latents
    alone = chroma.edit(inv.select(1), edits, decode=False).latents
    assert not torch.allclose(both, inv.source_latents, atol=1e-3)
    assert (both[1:] - alone).abs().max() <= replay_tolerance(alone)


# -- 4. masks ----------------------------------------------------------------------------------------------


def test_capture_leaves_chroma_bit_identical(chroma):
    model = chroma.model
    cond = model.encode_prompts(["red circle", "a blue cat"])
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    level = _level(torch.tensor([500.0, 500.0]))
    plain = model.estimate(x, level, cond)
    weights = torch.zeros(1, cond.embeds.shape[1])
    weights[0, model.token_positions("a blue cat")] = 1
    with model.capture_attention() as recorder:
        recorder.arm(slice(1, 2), weights)
        armed = model.estimate(x, level, cond)
        assert recorder.take((4, 4)).sum() > 0
    assert torch.equal(plain, armed)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_chroma_every_mask_mode_edits(chroma, mode):
    inv = chroma.invert(scene(seed=3), steps=4, skip=0.0, seed=0)
    out = chroma.edit(inv, [Edit("red circle", scale=6.0, threshold=0.7), "-a cat"], mask_mode=mode, decode=False)
    assert not torch.allclose(out.latents, inv.source_latents, atol=1e-3)
    share = float(out.mask_means.mean())
    assert share == 1.0 if mode == "none" else 0 < share < 1


def test_a_concepts_token_weights_sit_exactly_on_its_t5_word_tokens(chroma):
    """The weights (E, L) are 1 where T5's padded sequence holds the concept's word tokens — not
    on ``</s>`` nor on the attended first pad — and the text mask covers them."""
    model = chroma.model
    weights = chroma._concepts((Edit("red circle"), Edit("a blue cat")), use_attention=True).token_weights
    tokenizer, length = model.text.tokenizer, model.text.max_sequence_length
    masks = model.encode_prompts(["red circle", "a blue cat"]).tensors["mask"]
    for row, prompt in enumerate(("red circle", "a blue cat")):
        special = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        words = [t for t in tokenizer(prompt).input_ids if t not in special]
        padded = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
        expected = [i for i, t in enumerate(padded) if t in words]
        assert weights[row].nonzero().flatten().tolist() == expected and len(expected) == len(words) > 0
        assert masks[row].sum() == len(words) + 2 and masks[row, : len(words) + 2].all()  # + </s> + one pad


# -- 5. the command line ----------------------------------------------------------------------------------


def test_chroma_through_the_cli_edit_and_a_saved_inversion(chroma_folder, tmp_path, capsys):
    from leditspp.cli import main

    photo, out, inv, a = (
        tmp_path / "photo.png",
        tmp_path / "out.png",
        tmp_path / "p.inv.safetensors",
        tmp_path / "a.png",
    )
    scene(64, 96, seed=5).save(photo)
    common = ["--model", str(chroma_folder), "--device", "cpu", "--quiet", "--steps", "4"]
    assert main(["edit", str(photo), "-e", "+red circle", *common, "-o", str(out)]) == 0, capsys.readouterr().err
    with Image.open(out) as im:
        assert im.size == (96, 64) and json.loads(im.text["leditspp"])["steps"] == 4
    assert main(["invert", str(photo), "-o", str(inv), *common]) == 0, capsys.readouterr().err
    common = common[:-2]
    assert main(["edit", "--inversion", str(inv), "-e", "+red circle", "-o", str(a), *common]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(out)))
