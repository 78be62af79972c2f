"""The Editor's contract: values, save/load, refusals, scoped side effects, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leditspp import Edit, Editor, Inversion, LeditsError
from leditspp.testing import replay_tolerance

from .conftest import scene

EDITS = [Edit("a red hat", scale=7.0, threshold=0.7), Edit("a cat", remove=True, scale=5.0, threshold=0.8)]


@pytest.fixture(scope="module")
def inversion(editor):
    return editor.invert(scene(64, 96, seed=11), steps=12, skip=0.2, seed=0)


def test_edit_result_has_images_latents_and_masks(editor, inversion):
    result = editor.edit(inversion, EDITS)
    assert len(result.images) == 1 and result.images[0].size == (96, 64)
    assert result.latents.shape == (1, 4, 8, 12)
    assert result.masks.shape == (2, 1, 8, 12)
    assert set(result.masks.unique().tolist()) <= {0.0, 1.0}
    assert 0 < result.masks.mean() < 1  # intersect masks select part of the image


@pytest.mark.parametrize("mode", ["intersect", "attention", "noise", "none"])
def test_every_mask_mode_edits(editor, inversion, mode):
    result = editor.edit(inversion, EDITS, mask_mode=mode, decode=False)
    assert (result.latents - inversion.source_latents).abs().max() > 1e-3
    if mode == "none":
        assert result.masks.eq(1).all()


def test_attention_masks_follow_the_threshold(editor, inversion):
    low = editor.edit(inversion, [Edit("a red hat", threshold=0.25)], mask_mode="attention", decode=False)
    high = editor.edit(inversion, [Edit("a red hat", threshold=0.75)], mask_mode="attention", decode=False)
    assert low.masks.mean() > high.masks.mean() > 0


def test_save_load_round_trip(editor, inversion, tmp_path):
    path = inversion.save(tmp_path / "inv.safetensors")
    loaded = Inversion.load(path)
    assert loaded.info == inversion.info
    for name in ("noisy_latents", "denoised", "noise_maps", "timesteps", "source_latents"):
        assert torch.equal(getattr(loaded, name), getattr(inversion, name))
    a = editor.edit(inversion, EDITS, decode=False).latents
    b = editor.edit(loaded, EDITS, decode=False).latents
    assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_inversion_of_another_model_is_refused(inversion, tokenizer):
    from leditspp.testing import tiny_sd_pipeline

    other = Editor.from_pipe(tiny_sd_pipeline(tokenizer, seed=1))
    with pytest.raises(LeditsError, match="another model"):
        other.edit(inversion, EDITS)


def test_corrupt_and_foreign_inversion_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LeditsError, match="not a readable"):
        Inversion.load(bad)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(LeditsError, match="not a leditspp inversion"):
        Inversion.load(tmp_path / "foreign.safetensors")
    with pytest.raises(LeditsError, match="does not exist"):
        Inversion.load(tmp_path / "missing.safetensors")


def test_attention_processors_are_restored(editor, inversion):
    before = dict(editor.model.denoiser.unet.attn_processors)
    editor.edit(inversion, EDITS, mask_mode="intersect")
    after = dict(editor.model.denoiser.unet.attn_processors)
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)


def test_attention_processors_are_restored_after_an_error(editor, inversion, monkeypatch):
    before = dict(editor.model.denoiser.unet.attn_processors)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(editor.model.denoiser), "estimate", boom)
    with pytest.raises(RuntimeError, match="boom"):
        editor.edit(inversion, EDITS, mask_mode="intersect")
    monkeypatch.undo()
    assert all(before[k] is v for k, v in editor.model.denoiser.unet.attn_processors.items())


def test_a_reused_editor_equals_fresh_editors(sd_folder):
    a, b = scene(64, 64, seed=1), scene(64, 64, seed=2)
    shared = Editor.from_pretrained(str(sd_folder), device="cpu")
    shared.edit(shared.invert(a, steps=8, seed=0), EDITS)
    reused = shared.edit(shared.invert(b, steps=8, seed=0), EDITS, decode=False).latents
    fresh_editor = Editor.from_pretrained(str(sd_folder), device="cpu")
    fresh = fresh_editor.edit(fresh_editor.invert(b, steps=8, seed=0), EDITS, decode=False).latents
    assert torch.equal(reused, fresh)


def test_a_batch_equals_its_images_edited_one_by_one(editor):
    """SPEC A4: every image of a batch gets its own masks (port bug P8)."""
    images = [scene(64, 64, seed=3), scene(64, 64, seed=4)]
    gen = torch.Generator().manual_seed(0)
    batch_inv = editor.invert(images, steps=10, generator=gen)
    batch = editor.edit(batch_inv, EDITS, mask_mode="intersect", decode=False)
    for i in range(len(images)):
        single = batch_inv.select(i)
        alone = editor.edit(single, EDITS, mask_mode="intersect", decode=False)
        assert torch.equal(alone.masks[:, 0], batch.masks[:, i])
        assert (alone.latents[0] - batch.latents[i]).abs().max() <= replay_tolerance(batch.latents)


def test_user_mask_confines_the_guidance(editor):
    """With one step the guidance acts once, so outside the user mask the result is the input."""
    inversion = editor.invert(scene(64, 96, seed=11), steps=1, seed=0)
    mask = np.zeros((64, 96), dtype=np.float32)
    mask[:, :48] = 1.0  # left half of the picture may change
    result = editor.edit(inversion, EDITS, mask_mode="none", user_mask=mask, decode=False)
    change = (result.latents - inversion.source_latents).abs()[0]  # (4, 8, 12)
    assert change[..., 6:].max() <= 1e-5 < change[..., :6].max()


def test_guidance_rescale_works(editor, inversion):
    plain = editor.edit(inversion, EDITS, decode=False).latents
    rescaled = editor.edit(inversion, EDITS, guidance_rescale=0.7, decode=False).latents
    assert torch.isfinite(rescaled).all() and (rescaled - plain).abs().max() > 1e-4


def test_a_given_conditioning_equals_the_prompt(editor, inversion):
    cond = editor.model.encode_prompts(["a red hat"])
    by_text = editor.edit(inversion, [Edit("a red hat")], decode=False).latents
    by_embeds = editor.edit(inversion, [Edit("a red hat", conditioning=cond)], decode=False).latents
    assert torch.equal(by_text, by_embeds)
    with pytest.raises(LeditsError, match="prompt="):
        editor.edit(inversion, [Edit(None, conditioning=cond)], mask_mode="intersect")
    with pytest.raises(LeditsError, match="one-row Conditioning"):
        Edit("two rows", conditioning=editor.model.encode_prompts(["a", "b"]))
    noise_only = editor.edit(inversion, [Edit(None, conditioning=cond)], mask_mode="noise", decode=False)
    assert torch.isfinite(noise_only.latents).all()


def test_token_positions_count_real_words(editor):
    assert editor.model.token_positions("a photo of a cat") == [1, 2, 3, 4, 5]
    assert editor.model.token_positions("sunglasses") == [1]


def test_token_positions_ignore_bang_padding(sd2_editor):
    assert sd2_editor.model.token_positions("a photo of a cat!") == [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def sd2_editor(tokenizer_2):
    """SD 2.x-shaped: v-prediction and a tokenizer that pads with "!"."""
    from leditspp.testing import tiny_sd_pipeline

    return Editor.from_pipe(tiny_sd_pipeline(tokenizer_2, seed=2, prediction_type="v_prediction"))


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize(("size", "batch", "source"), [((64, 64), 1, ""), ((64, 96), 2, "a scene")])
def test_v_prediction_models_invert_exactly_and_edit(sd2_editor, solver, size, batch, source):
    editor = sd2_editor
    images = [scene(*size, seed=i) for i in range(batch)]
    inv = editor.invert(images, steps=15, solver=solver, seed=0, source_prompt=source)
    assert (editor.edit(inv, decode=False).latents - inv.source_latents).abs().max() <= 1e-5
    replay = editor.edit(inv, [Edit("hat", scale=0.0)], mask_mode="none", decode=False).latents
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edited = editor.edit(inv, EDITS, decode=False)
    assert (edited.latents - inv.source_latents).abs().amax((1, 2, 3)).min() > 1e-3  # parity: test_parity.py


def test_image_inputs_of_every_kind_agree(editor):
    pil = scene(64, 64, seed=9)
    arr = np.asarray(pil)
    tensor = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    latents = [editor.invert(x, steps=3, seed=0).source_latents for x in (pil, arr, tensor)]
    assert torch.equal(latents[0], latents[1]) and torch.allclose(latents[0], latents[2], atol=1e-6)


def test_sizes_are_rounded_down_or_refused(editor):
    inv = editor.invert(scene(70, 100), steps=3, seed=0)  # not a multiple of 8
    assert (inv.info.height, inv.info.width) == (64, 96)
    with pytest.raises(LeditsError, match="multiple of 32"):
        editor.invert(scene(70, 100), steps=3, height=70, width=96)
    with pytest.raises(LeditsError, match="too small"):
        editor.invert(scene(20, 20), steps=3)
    with pytest.raises(LeditsError, match="different sizes"):
        editor.invert([scene(64, 64), scene(96, 64)], steps=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": "/no/such/file.png"}, "does not exist"),
        ({"steps": 0}, "steps"),
        ({"skip": 15}, "did you mean 0.15"),
        ({"solver": "euler"}, "solver"),
        ({"source_guidance": -1.0}, "source_guidance"),
        ({"seed": 1, "generator": torch.Generator()}, "either seed"),
    ],
)
def test_bad_inversion_input(editor, kwargs, message):
    kwargs.setdefault("images", scene(64, 64))
    with pytest.raises(LeditsError, match=message):
        editor.invert(**kwargs)


def test_unreadable_image_file(editor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(LeditsError, match="cannot read"):
        editor.invert(str(bad))


@pytest.mark.parametrize(
    ("edits", "kwargs", "message"),
    [
        (["+"], {}, "empty"),
        ([Edit("hat")], {"mask_mode": "both"}, "mask_mode"),
        ([Edit("hat")], {"guidance_rescale": 2.0}, "guidance_rescale"),
        ([Edit("hat")], {"user_mask": np.full((8, 8), 2.0)}, "user_mask"),
    ],
)
def test_bad_edit_input(editor, inversion, edits, kwargs, message):
    with pytest.raises(LeditsError, match=message):
        editor.edit(inversion, edits, **kwargs)


def test_unknown_family_is_refused_with_the_supported_list(editor):
    components = dict(editor.model.components(), tokenizer=editor.model.text.tokenizer, scheduler=None)
    with pytest.raises(LeditsError, match="supported families"):
        Editor.from_pipe(components)


def test_mask_means_average_the_masks_over_the_steps_a_concept_acted(editor, inversion):
    steps = len(inversion.timesteps)
    last_only = editor.edit(inversion, [Edit("a red hat", warmup_steps=steps - 1)], decode=False)
    assert torch.equal(last_only.mask_means, last_only.masks)
    every = editor.edit(inversion, [Edit("a red hat"), Edit("a cat", warmup_steps=steps - 1)], decode=False)
    assert every.mask_means.min() >= 0 and every.mask_means.max() <= 1
    assert not torch.equal(every.mask_means[0], every.masks[0])  # the mask moves between steps
