"""Few-step distilled models (SD-Turbo, SDXL-Turbo, Lightning, LCM): their scheduler configs pick
the noise path's spacing, and inversion stays exact for every N ≥ 1 (issue 13)."""

from __future__ import annotations

import pytest
import torch

from leditspp import Edit, Editor, LeditsError
from leditspp.testing import few_step_scheduler, replay_tolerance, tiny_sd_pipeline, tiny_sdxl_pipeline

from .conftest import scene

#: (kind, solver): the solver a user runs each kind with.
KINDS = [("turbo", "ddpm"), ("turbo", "dpmsolver++"), ("lightning", "ddpm"), ("lcm", "lcm")]


@pytest.fixture(scope="module")
def few_step_folders(tmp_path_factory, tokenizer):
    """Tiny SD models saved with each few-step scheduler config, as checkpoints ship them."""
    folders = {}
    for kind in ("turbo", "lightning", "lcm"):
        pipe = tiny_sd_pipeline(tokenizer, seed=0)
        pipe.scheduler = few_step_scheduler(kind)
        folders[kind] = tmp_path_factory.mktemp(f"tiny-{kind}")
        pipe.save_pretrained(folders[kind])
    return folders


@pytest.fixture(scope="module")
def few_step_editors(few_step_folders):
    return {kind: Editor.from_pretrained(str(folder), device="cpu") for kind, folder in few_step_folders.items()}


def test_the_scheduler_config_picks_the_spacing(few_step_editors):
    spacing = {kind: e.model.path.spacing for kind, e in few_step_editors.items()}
    assert spacing == {"turbo": "trailing", "lightning": "trailing", "lcm": "lcm"}
    inv = few_step_editors["turbo"].invert(scene(), steps=4, skip=0.0, solver="ddpm", seed=0)
    assert inv.timesteps.tolist() == [999, 749, 499, 249]
    lcm = few_step_editors["lcm"].invert(scene(), steps=4, skip=0.0, solver="lcm", seed=0)
    assert lcm.timesteps.tolist() == [999, 759, 499, 259]


@pytest.mark.parametrize(("kind", "solver"), KINDS)
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_few_step_inversion_is_exact(few_step_editors, kind, solver, steps):
    """No edit ⇒ the input latent; a scale-0 concept replays every step through the network and
    the solver with the stored noise maps and lands on it too (fp32 rounding only)."""
    editor = few_step_editors[kind]
    inv = editor.invert([scene(seed=1), scene(seed=2)], steps=steps, skip=0.0, solver=solver, seed=3)
    assert (editor.edit(inv, decode=False).latents - inv.source_latents).abs().max() <= 1e-5
    replay = editor.edit(inv, [Edit("a red hat", scale=0.0)], mask_mode="none", decode=False).latents
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)


@pytest.mark.parametrize(("kind", "solver"), KINDS)
def test_few_step_edits_act_inside_their_masks(few_step_editors, kind, solver):
    editor = few_step_editors[kind]
    inv = editor.invert(scene(seed=4), steps=4, skip=0.0, solver=solver, seed=0)
    out = editor.edit(inv, [Edit("a red hat", scale=6.0, threshold=0.8)], decode=False)
    changed = (out.latents - inv.source_latents).abs().amax(dim=1)  # (B, h, w)
    assert changed.max() > 0.05  # the edit does something
    assert out.mask_means.shape == (1, 1, 8, 8) and 0 < out.mask_means.mean() < 1  # and only where masked


def test_an_inversion_on_another_spacing_is_refused(few_step_folders):
    """Same weights, another noise path (leading instead of the config's trailing): the stored
    timesteps do not match, and the editor says so instead of editing on the wrong schedule."""
    turbo = Editor.from_pretrained(str(few_step_folders["turbo"]), device="cpu")
    leading = Editor.from_pretrained(str(few_step_folders["turbo"]), device="cpu", spacing="leading")
    assert leading.model.path.spacing == "leading"
    inv = turbo.invert(scene(), steps=4, skip=0.0, solver="ddpm", seed=0)
    with pytest.raises(LeditsError, match="leading spacing"):
        leading.edit(inv, ["+a hat"])


def test_lcm_refuses_more_steps_than_its_schedule_has(few_step_editors):
    with pytest.raises(LeditsError, match="at most 50"):
        few_step_editors["lcm"].invert(scene(), steps=60, skip=0.0, solver="lcm")


def test_sdxl_turbo_inversion_is_exact(tokenizer, tokenizer_2):
    pipe = tiny_sdxl_pipeline(tokenizer, tokenizer_2, seed=0)
    pipe.scheduler = few_step_scheduler("turbo")
    editor = Editor.from_pipe(pipe)
    assert editor.model.path.spacing == "trailing"
    for steps in (1, 4):
        inv = editor.invert(scene(), steps=steps, skip=0.0, solver="ddpm", seed=0)
        assert inv.timesteps[0] == 999
        replay = editor.edit(inv, [Edit("snow", scale=0.0)], mask_mode="none", decode=False).latents
        assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edited = editor.edit(inv, [Edit("snow", scale=6.0)], decode=False).latents
    assert not torch.allclose(edited, inv.source_latents, atol=1e-3)


def test_few_step_models_recommend_their_steps_and_solver(few_step_editors, few_step_folders, tmp_path):
    """Turbo/Lightning recommend 4 DDPM steps without skip, LCM its own solver; the CLI inverts a
    few-step folder with them when no flag says otherwise."""
    from leditspp.cli import main
    from leditspp.inversion import Inversion

    for kind, solver in (("turbo", "ddpm"), ("lightning", "ddpm"), ("lcm", "lcm")):
        rec = few_step_editors[kind].recommended
        assert (rec["solver"], rec["steps"], rec["skip"]) == (solver, 4, 0.0)
    photo, inv = tmp_path / "photo.png", tmp_path / "photo.inv.safetensors"
    scene().save(photo)
    args = ["invert", str(photo), "-o", str(inv), "--model", str(few_step_folders["lcm"]), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    info = Inversion.load(inv).info
    assert (info.solver, info.steps, info.skip) == ("lcm", 4, 0.0)


def test_lcm_lora_loads_through_diffusers_and_inverts_exactly(tokenizer, tmp_path):
    """LCM-LoRA as users run it: ``load_lora_weights`` on an SD pipeline, the scheduler swapped to
    LCMScheduler, then ``Editor.from_pipe``. The LoRA acts (other estimates than without it),
    the attention capture sees the adapted projections, and the inversion stays exact."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    trained = tiny_sd_pipeline(tokenizer, seed=0)
    trained.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(9)
    for name, p in trained.unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)  # a trained LoRA: not the zero initialisation
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(trained.unet))

    pipe = tiny_sd_pipeline(tokenizer, seed=0)
    plain = Editor.from_pipe(pipe)
    reference = plain.invert(scene(), steps=4, skip=0.0, solver="ddpm", seed=0)
    pipe.load_lora_weights(tmp_path)
    pipe.scheduler = few_step_scheduler("lcm")
    lcm = Editor.from_pipe(pipe)
    assert lcm.model.path.spacing == "lcm" and lcm.recommended["solver"] == "lcm"
    for steps in (1, 4):
        inv = lcm.invert(scene(), steps=steps, skip=0.0, solver="lcm", seed=0)
        replay = lcm.edit(inv, [Edit("a red hat", scale=0.0)], mask_mode="none", decode=False).latents
        assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edited = lcm.edit(inv, [Edit("a red hat", scale=6.0)], mask_mode="intersect", decode=False)
    assert not torch.allclose(edited.latents, inv.source_latents, atol=1e-3)
    with_lora = lcm.invert(scene(), steps=4, skip=0.0, solver="ddpm", seed=0)
    assert not torch.allclose(with_lora.denoised, reference.denoised, atol=1e-3)  # the LoRA acts
