"""The fault catalogue of the flow and few-step surfaces (issue 22, item 2): each probe a line.

What a careless user tries on SD3/FLUX.1 folders and few-step settings: an inversion edited by
another family, a solver the model cannot use, one step, bf16 on a CPU, a model folder's
``leditspp.json`` with wrong types, unknown keys or options its family cannot use. Each ends in
exit 2 with one line naming the problem (or, where the input is valid, in a correct edit).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from leditspp import Editor, LeditsError
from leditspp.cli import main

from .conftest import scene


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    scene(64, 64).save(path)
    return path


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main([*args, "--device", "cpu", "--quiet"])
    return code, capsys.readouterr().err.strip()


def test_an_sd3_inversion_is_refused_by_flux_and_sd(sd3_editor, flux_editor, editor):
    inversion = sd3_editor.invert(scene(), steps=2, seed=0)
    for other in (flux_editor, editor):
        with pytest.raises(LeditsError, match=r"made with another model \(.*sd3.*[Ii]nvert the image again"):
            other.edit(inversion, ["+a hat"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "lcm"], "lcm solver is for LCM-distilled DDPM models"),
        (["--steps", "0"], "steps must be an integer"),
        (["--skip", "1"], "skip is a fraction in [0, 1)"),
    ],
    ids=["lcm-on-a-flow-model", "zero-steps", "skip-one"],
)
def test_flow_cli_probes_exit_2_with_one_line(args, message, sd3_folder, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, err = run(["edit", str(photo), "-e", "+a hat", "--model", str(sd3_folder), *args, "-o", str(out)], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("family", ["sd3_editor", "flux_editor"])
def test_one_step_is_exact_on_flows(family, request):
    editor = request.getfixturevalue(family)
    for solver in ("dpmsolver++", "ddpm"):
        inv = editor.invert(scene(), steps=1, skip=0.0, solver=solver, seed=0)
        assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)
        assert torch.isfinite(editor.edit(inv, ["+a red hat:4"], decode=False).latents).all()


def test_bf16_on_a_cpu_edits_with_fp32_solver_state(sd3_folder):
    editor = Editor.from_pretrained(str(sd3_folder), device="cpu", torch_dtype=torch.bfloat16)
    inv = editor.invert(scene(), steps=3, seed=0)
    assert inv.noise_maps.dtype == torch.float32 and inv.info.dtype == "bfloat16"
    assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_sequence_length": "long"}, "mistyped entries ['max_sequence_length']"),
        ({"max_sequence_length": 4096}, "max_sequence_length must be an integer in [0, 512] for SD3"),
        ({"recommended": {"steps": "many"}}, "mistyped entries ['steps']"),
        ({"recommended": {"sampler": "euler"}}, "mistyped entries ['sampler']"),
        ({"shift": 3.0}, "unknown or mistyped entries ['shift']"),
        ({"mask_level": 2}, "sd3 models do not take mask_level"),
        ({"spacing": "trailing"}, "sd3 models do not take spacing"),
    ],
    ids=["seq-text", "seq-huge", "steps-text", "unknown-recommended", "unknown-key", "mask-level", "spacing"],
)
def test_a_bad_model_settings_file_is_refused(settings, message, sd3_folder, photo, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(sd3_folder, folder)
    (folder / "leditspp.json").write_text(json.dumps(settings))
    out = tmp_path / "out.png"
    code, err = run(["edit", str(photo), "-e", "+a hat", "--model", str(folder), "-o", str(out)], capsys)
    assert code == 2 and message in err and not out.exists(), err
