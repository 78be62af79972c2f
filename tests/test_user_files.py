"""The user's own model files: LoRAs, single-file checkpoints, a folder's leditspp.json through
from_pipe, and what the pipeline's scheduler is used for — all on tiny models written here."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from leditspp import Editor
from leditspp.errors import LeditsError
from leditspp.inversion import Inversion
from leditspp.model_options import ModelOptions

from .conftest import scene


def write_lora(folder, model_folder, seed: int = 0):
    """A tiny LoRA on the UNet's attention projections (random, so it changes the output),
    saved with diffusers' ``save_lora_weights``; returns its file."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(model_folder, safety_checker=None)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    pipe.unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, sd_folder):
    return write_lora(tmp_path_factory.mktemp("lora"), sd_folder)


@pytest.fixture(scope="module")
def inverted(editor):
    return editor.invert(scene(), steps=4, skip=0.0)


def test_a_lora_changes_the_output_and_the_fingerprint(sd_folder, lora_file, editor, inverted):
    with_lora = Editor.from_pretrained(str(sd_folder), device="cpu", loras=[f"{lora_file}:0.8"])
    assert with_lora.loras[0].source == str(lora_file.resolve()) and with_lora.loras[0].scale == 0.8
    assert with_lora.fingerprint != editor.fingerprint
    mine = with_lora.invert(scene(), steps=4, skip=0.0)
    assert json.loads(mine.info.loras) == [[str(lora_file.resolve()), 0.8]]
    edited = with_lora.edit(mine, "+red circle:6", decode=False).latents
    plain = editor.edit(inverted, "+red circle:6", decode=False).latents
    assert not torch.equal(edited, plain)
    assert torch.equal(with_lora.edit(mine, decode=False).latents, mine.source_latents)  # still exact


def test_an_inversion_with_other_loras_is_refused_naming_them(tmp_path, sd_folder, lora_file, editor, inverted):
    with_lora = Editor.from_pretrained(str(sd_folder), device="cpu").load_lora(str(lora_file), scale=0.5)
    mine = with_lora.invert(scene(), steps=4, skip=0.0)
    mine.save(tmp_path / "inv.safetensors")
    loaded = Inversion.load(tmp_path / "inv.safetensors")
    assert json.loads(loaded.info.loras) == [[str(lora_file.resolve()), 0.5]]
    with pytest.raises(LeditsError, match=rf"made with the LoRAs \[{lora_file.resolve()}:0.5\].*has none.*--lora"):
        editor.edit(loaded)
    with pytest.raises(LeditsError, match=r"made with the LoRAs none; this editor has \[.*Edit it with no --lora"):
        with_lora.edit(inverted)
    other = Editor.from_pretrained(str(sd_folder), device="cpu", loras=[(str(lora_file), 1.0)])
    with pytest.raises(LeditsError, match=r"0\.5\].*has \[.*:1\]"):
        other.edit(loaded)


def test_a_bad_lora_is_one_clear_error(tmp_path, sd_folder):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a lora")
    with pytest.raises(LeditsError, match="cannot load the LoRA"):
        Editor.from_pretrained(str(sd_folder), device="cpu", loras=[str(bad)])
    with pytest.raises(LeditsError, match="scale must be a finite number"):
        Editor.from_pretrained(str(sd_folder), device="cpu", loras=[(str(bad), float("nan"))])


def test_from_pipe_keeps_the_folders_leditspp_json():
    from diffusers import DiffusionPipeline

    from leditspp.models import resolve_model

    pipe = DiffusionPipeline.from_pretrained(resolve_model("demo"))
    editor = Editor.from_pipe(pipe)
    assert editor.model.mask_level == 1 and editor.recommended["scale"] == 8
    assert Editor.from_pipe(pipe, mask_level=2, recommended={"scale": 3.0}).recommended["scale"] == 3.0


def test_the_schedulers_update_rule_is_said_to_be_unused(sd_folder, caplog):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)  # a PNDMScheduler
    with caplog.at_level(logging.INFO, logger="leditspp"):
        Editor.from_pipe(pipe)
    lines = [r.getMessage() for r in caplog.records if "update rule" in r.getMessage()]
    assert len(lines) == 1 and "PNDMScheduler" in lines[0] and "solver=" in lines[0]
    caplog.clear()
    from diffusers import DPMSolverMultistepScheduler

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with caplog.at_level(logging.INFO, logger="leditspp"):
        Editor.from_pipe(pipe)
    assert not [r for r in caplog.records if "update rule" in r.getMessage()]


@pytest.fixture(scope="module")
def single_file(tmp_path_factory, sd_folder):
    """The tiny SD model of ``sd_folder`` as one original-layout .safetensors file."""
    from diffusers import StableDiffusionPipeline

    from leditspp.testing.single_file import write_sd_single_file

    pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)
    return write_sd_single_file(pipe, tmp_path_factory.mktemp("single") / "model.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_single_file_loads_exactly_and_edits_as_its_folder(
    tmp_path, suffix, sd_folder, single_file, editor, inverted
):
    from diffusers import StableDiffusionPipeline

    from leditspp.testing.single_file import write_sd_single_file

    path = single_file
    if suffix == ".ckpt":
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)
        path = write_sd_single_file(pipe, tmp_path / "model.ckpt")
    loaded = Editor.from_pretrained(str(path), device="cpu", base=str(sd_folder))
    assert loaded.model.family == editor.model.family and loaded.source == str(path.resolve())
    assert loaded.fingerprint == editor.fingerprint  # the same weights and configs
    mine = loaded.invert(scene(), steps=4, skip=0.0)
    assert torch.equal(mine.noise_maps, inverted.noise_maps)
    assert torch.equal(loaded.edit(mine, decode=False).latents, mine.source_latents)
    edits = "+red circle:6"
    assert torch.equal(
        loaded.edit(inverted, edits, decode=False).latents, editor.edit(inverted, edits, decode=False).latents
    )


def test_a_single_file_without_its_configs_names_the_base_fix(single_file):
    with pytest.raises(LeditsError, match=r"StableDiffusionPipeline.*not reachable and not in the cache.*--base MODEL"):
        Editor.from_pretrained(str(single_file), device="cpu")


def test_a_transformer_only_file_names_what_is_missing(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.ones(4)}, str(path))
    with pytest.raises(
        LeditsError, match=r"only a Flux transformer; its text encoders, tokenizers, VAE and scheduler.*--base"
    ):
        Editor.from_pretrained(str(path), device="cpu")


def test_a_corrupt_or_unknown_file_is_one_clear_error(tmp_path, sd_folder, single_file):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(single_file.read_bytes()[:1000])
    with pytest.raises(LeditsError, match="cannot be read as a checkpoint"):
        Editor.from_pretrained(str(junk), device="cpu", base=str(sd_folder))
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, str(other))
    with pytest.raises(LeditsError, match="not a checkpoint of a family leditspp reads from one file"):
        Editor.from_pretrained(str(other), device="cpu")
    with pytest.raises(LeditsError, match=r"is a StableDiffusionPipeline checkpoint but the base .* is a"):
        Editor.from_pretrained(str(single_file), device="cpu", base="demo-flow")
    with pytest.raises(LeditsError, match="a base model is for single-file checkpoints"):
        Editor.from_pretrained(str(sd_folder), device="cpu", base=str(sd_folder))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    scene().save(path)
    return path


def _pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


def test_the_command_line_reads_a_single_file_and_loras(tmp_path, photo, sd_folder, single_file, lora_file, capsys):
    from leditspp.cli import main

    replay = ["-e", "+a red hat:6", "--device", "cpu", "--quiet"]
    common = [*replay, "--steps", "4"]
    folder, file, lora = tmp_path / "folder.png", tmp_path / "file.png", tmp_path / "lora.png"
    assert main(["edit", str(photo), "--model", str(sd_folder), "-o", str(folder), *common]) == 0
    assert (
        main(["edit", str(photo), "--model", str(single_file), "--base", str(sd_folder), "-o", str(file), *common]) == 0
    )
    assert (_pixels(file) == _pixels(folder)).all()
    args = ["--model", str(sd_folder), "--lora", f"{lora_file}:0.8"]
    assert main(["edit", str(photo), *args, "-o", str(lora), *common]) == 0
    assert not (_pixels(lora) == _pixels(folder)).all()

    inv = tmp_path / "photo.inv.safetensors"
    assert main(["invert", str(photo), *args, "-o", str(inv), "--steps", "4", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert (
        main(["edit", "--inversion", str(inv), "--model", str(sd_folder), "-o", str(tmp_path / "x.png"), *replay]) == 2
    )
    assert f"Edit it with --lora {lora_file.resolve()}:0.8" in capsys.readouterr().err
    again = tmp_path / "again.png"
    assert main(["edit", "--inversion", str(inv), *args, "-o", str(again), *replay]) == 0
    mine = tmp_path / "mine.png"  # no --model: the model, base and LoRAs the inversion names
    assert main(["edit", "--inversion", str(inv), "-o", str(mine), *replay]) == 0
    assert (_pixels(mine) == _pixels(again)).all()
    file_inv, by_file = tmp_path / "file.inv.safetensors", tmp_path / "by-file.png"
    file_args = ["--model", str(single_file), "--base", str(sd_folder), "--device", "cpu", "--quiet"]
    assert main(["invert", str(photo), *file_args, "-o", str(file_inv), "--steps", "4"]) == 0
    assert main(["edit", "--inversion", str(file_inv), "-o", str(by_file), *replay]) == 0
    assert (_pixels(by_file) == _pixels(folder)).all()

    assert main(["edit", str(photo), "--model", str(single_file), "-o", str(tmp_path / "y.png"), *common]) == 2
    assert "--base MODEL" in capsys.readouterr().err
    assert (
        main(["edit", str(photo), "--lora", f"{tmp_path / 'none.safetensors'}", "-o", str(tmp_path / "z.png"), *common])
        == 2
    )
    assert "cannot load the LoRA" in capsys.readouterr().err


def test_the_web_ui_serves_a_single_file_with_loras(sd_folder, single_file, lora_file, photo):
    from PIL import Image

    from leditspp.webui import EditorService, edit_request

    plain = EditorService(model=str(sd_folder), options=ModelOptions(device="cpu"))
    service = EditorService(
        model=str(single_file), options=ModelOptions(device="cpu", base=str(sd_folder), loras=(f"{lora_file}:0.8",))
    )
    assert service.editor.loras[0].scale == 0.8 and service.editor.source == str(single_file.resolve())
    settings = {**service.settings, "steps": 4, "skip": 0.0}
    rows = [["red circle", "+", 6, 0.9, 0, None]]
    edited = edit_request(service, Image.open(photo), rows, settings).edited
    assert not (np.asarray(edited) == np.asarray(edit_request(plain, Image.open(photo), rows, settings).edited)).all()


def test_outputs_record_the_loras_and_resume_tells_them_apart(tmp_path, photo, sd_folder, lora_file):
    from leditspp.batch.outputs import stored_recipe
    from leditspp.batch.plan import BatchEdit, plan_edits
    from leditspp.cli import main
    from leditspp.model_options import ModelOptions

    out = tmp_path / "out.png"
    args = ["edit", str(photo), "-e", "+hat", "--model", str(sd_folder), "--steps", "3", "--device", "cpu", "--quiet"]
    assert main([*args, "--lora", f"{lora_file}:0.8", "-o", str(out)]) == 0
    recipe = stored_recipe(out)
    assert recipe["loras"] == [f"{lora_file.resolve()}:0.8"] and recipe["base"] is None

    def finished(**files):
        batch = BatchEdit(images=(str(photo),), output=str(out), edits=("+hat",), model=str(sd_folder), resume=True)
        return plan_edits(replace(batch, settings={"steps": 3}, options=ModelOptions(**files))).finished

    assert finished(loras=(f"{lora_file}:0.8",)) == 1
    assert finished(loras=(f"{lora_file}:0.5",)) == 0 and finished() == 0


def test_a_transformer_only_file_takes_the_rest_from_its_base(tmp_path):
    """A Z-Image transformer written alone in its original layout, the rest from the base folder."""
    from leditspp.testing.single_file import write_zimage_single_file
    from leditspp.testing.tiny2026 import tiny_zimage_pipeline

    pipe = tiny_zimage_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "base")
    path = write_zimage_single_file(pipe.transformer, tmp_path / "z-image.safetensors")
    with pytest.raises(LeditsError, match=r"only a ZImage transformer.*--base MODEL"):
        Editor.from_pretrained(str(path), device="cpu")
    folder = Editor.from_pretrained(str(tmp_path / "base"), device="cpu")
    loaded = Editor.from_pretrained(str(path), device="cpu", base=str(tmp_path / "base"))
    assert loaded.fingerprint == folder.fingerprint and loaded.model.family == folder.model.family
    inversion = loaded.invert(scene(), steps=3, skip=0.0)
    assert torch.equal(loaded.edit(inversion, decode=False).latents, inversion.source_latents)
    edits = "+red circle:4"
    assert torch.equal(
        loaded.edit(inversion, edits, decode=False).latents, folder.edit(inversion, edits, decode=False).latents
    )


def test_a_lora_on_a_flow_transformer(tmp_path):
    """LoRAs go through each family's own loader: here Z-Image's, on its transformer."""
    from diffusers import ZImagePipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from leditspp.testing.tiny2026 import tiny_zimage_pipeline

    tiny_zimage_pipeline(seed=0).save_pretrained(tmp_path / "base")
    pipe = ZImagePipeline.from_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    pipe.transformer.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False)
    )
    ZImagePipeline.save_lora_weights(
        tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    plain = Editor.from_pretrained(str(tmp_path / "base"), device="cpu")
    lora = Editor.from_pretrained(str(tmp_path / "base"), device="cpu", loras=[str(tmp_path / "lora")])
    assert lora.fingerprint != plain.fingerprint and lora.loras[0].source == str((tmp_path / "lora").resolve())
    inversion = lora.invert(scene(), steps=3, skip=0.0)
    assert torch.equal(lora.edit(inversion, decode=False).latents, inversion.source_latents)
    assert not torch.equal(
        lora.invert(scene(), steps=3, skip=0.0).noise_maps, plain.invert(scene(), steps=3, skip=0.0).noise_maps
    )


def test_the_command_line_says_the_schedulers_rule_is_unused(sd_folder, tmp_path, caplog):
    """Shown without --quiet (the library itself logs it at INFO, which a command line hides)."""
    from leditspp.cli import main

    image = tmp_path / "in.png"
    scene(64, 64).save(image)
    args = ["invert", str(image), "--model", str(sd_folder), "--steps", "2", "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "i.safetensors")]) == 0
    assert any("PNDMScheduler lends its noise schedule" in r.getMessage() for r in caplog.records)
