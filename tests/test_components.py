"""Model folders whose components do not fit together are refused as they load, with one error
naming the component, the value and the fix: a scheduler value of the wrong type or range, a text
encoder of another width or depth than the denoiser reads, a tokenizer without a vocabulary (a
Chroma folder without ``tokenizer/`` encoded every concept as the same ``<unk>`` tokens), of
another model, or without the chat template its pipeline formats prompts with. And an image
larger than the transformer has positions for is refused before the model runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from leditspp import Editor, LeditsError
from leditspp.cli import main
from leditspp.testing import clip_text_encoder, t5_text_encoder
from leditspp.testing.tiny2026 import TINY_2026_PIPELINES, qwen3_text_encoder, qwen25vl_text_encoder

from .conftest import scene

Mutation = Callable[[Path], None]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sd_folder, sdxl_folder, sd3_folder, flux_folder) -> dict[str, Path]:
    """A tiny saved folder of every family."""
    built = {"sd": sd_folder, "sdxl": sdxl_folder, "sd3": sd3_folder, "flux": flux_folder}
    for family, pipeline in TINY_2026_PIPELINES.items():
        built[family] = tmp_path_factory.mktemp(family)
        pipeline(seed=0).save_pretrained(built[family])
    return built


def changed(folders: dict[str, Path], family: str, mutate: Mutation, tmp_path: Path) -> Path:
    folder = tmp_path / family
    shutil.copytree(folders[family], folder)
    mutate(folder)
    return folder


def scheduler_value(**values: Any) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / "scheduler" / "scheduler_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))

    return mutate


def text_encoder(component: str, build: Callable[[Any], Any]) -> Mutation:
    """``component`` replaced by ``build(its tokenizer)``: another model's encoder, saved in place."""

    def mutate(folder: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(folder / component.replace("text_encoder", "tokenizer"))
        shutil.rmtree(folder / component)
        torch.manual_seed(0)
        build(tokenizer).save_pretrained(folder / component)

    return mutate


def removed(*paths: str) -> Mutation:
    def mutate(folder: Path) -> None:
        for path in paths:
            for found in folder.glob(path):
                shutil.rmtree(found) if found.is_dir() else found.unlink()

    return mutate


def clip(width: int, **config: Any) -> Callable[[Any], Any]:
    return lambda tok: clip_text_encoder(tok, width, layers=2, heads=2, intermediate=64, **config)


def t5(width: int) -> Callable[[Any], Any]:
    return lambda tok: t5_text_encoder(tok, width, layers=2, heads=4, head_dim=8, ff=128)


SCHEDULER_PROBES = [
    (family, value)
    for family in ("sd3", "flux", "chroma", "klein", "zimage", "qwenimage")
    for value in ({"shift": "abc"}, {"shift": 0}, {"num_train_timesteps": 0})
] + [("sd", {"num_train_timesteps": 0}), ("sd", {"beta_end": "abc"}), ("sdxl", {"steps_offset": -1})]


@pytest.mark.parametrize(("family", "values"), SCHEDULER_PROBES, ids=str)
def test_a_bad_scheduler_value_is_refused_naming_the_file_and_key(folders, family, values, tmp_path):
    folder = changed(folders, family, scheduler_value(**values), tmp_path)
    [(name, value)] = values.items()
    expected = rf"scheduler[/\\]scheduler_config\.json: {name} must be .*; got {value!r}"
    with pytest.raises(LeditsError, match=expected):
        Editor.from_pretrained(str(folder), device="cpu")


def test_a_dynamic_shift_between_equal_lengths_is_refused(folders, tmp_path):
    """FLUX.1 [dev]'s μ is a line from base_image_seq_len to max_image_seq_len: one point is none."""
    folder = changed(folders, "flux", scheduler_value(base_image_seq_len=256, max_image_seq_len=256), tmp_path)
    with pytest.raises(LeditsError, match="base_image_seq_len and max_image_seq_len are both 256"):
        Editor.from_pretrained(str(folder), device="cpu")


TEXT_ENCODER_PROBES = {
    "sd-clip-wider": ("sd", text_encoder("text_encoder", clip(48)), "48 wide, but the unet's cross_attention_dim"),
    "sdxl-second-clip-wider": (
        "sdxl",
        text_encoder("text_encoder_2", clip(64, projection_dim=40)),
        r"32 \+ 64 = 96 wide, but the unet's cross_attention_dim is 80",
    ),
    "sdxl-projection": (
        "sdxl",
        text_encoder("text_encoder_2", clip(48, projection_dim=48)),
        "48 in its projection, but the unet's projection_class_embeddings_input_dim",
    ),
    "sd3-t5-narrower": ("sd3", text_encoder("text_encoder_3", t5(64)), "64 wide, but the transformer's joint"),
    "flux-t5-narrower": ("flux", text_encoder("text_encoder_2", t5(32)), "32 wide, but the transformer's joint"),
    "flux-clip-wider": ("flux", text_encoder("text_encoder", clip(48)), "48 wide, but the transformer's pooled_proj"),
    "chroma-t5-narrower": ("chroma", text_encoder("text_encoder", t5(32)), "32 wide, but the transformer's joint_att"),
    "klein-qwen3-wider": (
        "klein",
        text_encoder("text_encoder", lambda tok: qwen3_text_encoder(tok, hidden=48, layers=28)),
        "48 wide, but the transformer's joint_attention_dim 96 is 3 × its width: it needs 32",
    ),
    "klein-qwen3-shallower": (
        "klein",
        text_encoder("text_encoder", lambda tok: qwen3_text_encoder(tok, layers=20)),
        r"20 layers, but the pipeline reads the hidden states of layers \(9, 18, 27\): it needs at least 28",
    ),
    "zimage-qwen3-wider": (
        "zimage",
        text_encoder("text_encoder", lambda tok: qwen3_text_encoder(tok, hidden=48)),
        "48 wide, but the transformer's cap_feat_dim is 32",
    ),
    "zimage-qwen3-one-layer": (
        "zimage",
        text_encoder("text_encoder", lambda tok: qwen3_text_encoder(tok, layers=1)),
        "1 layers, but the pipeline reads the penultimate layer's states: it needs at least 2",
    ),
    "qwenimage-wider": (
        "qwenimage",
        text_encoder("text_encoder", lambda tok: qwen25vl_text_encoder(tok, hidden=48, heads=3)),
        "48 wide, but the transformer's joint_attention_dim is 32",
    ),
}


@pytest.mark.parametrize("probe", TEXT_ENCODER_PROBES)
def test_a_text_encoder_the_denoiser_cannot_read_is_refused_before_it_loads(folders, probe, tmp_path):
    family, mutate, message = TEXT_ENCODER_PROBES[probe]
    folder = changed(folders, family, mutate, tmp_path)
    with pytest.raises(LeditsError, match=rf"text_encoder.*{message}.* use the text encoder the denoiser was trained"):
        Editor.from_pretrained(str(folder), device="cpu")


@pytest.mark.parametrize(
    ("family", "mutate", "message"),
    [
        ("chroma", removed("tokenizer"), r"reads 'a photo of a cat' as \['▁', '<unk>'.*it has no vocabulary"),
        ("klein", removed("tokenizer"), r"reads 'a photo of a cat' as \[\]: it has no vocabulary"),
        ("zimage", removed("tokenizer"), "it has no vocabulary"),
        ("qwenimage", removed("tokenizer"), "it has no vocabulary"),
        ("klein", removed("tokenizer/chat_template*"), "has no chat template, and klein's pipeline formats"),
        ("zimage", removed("tokenizer/chat_template*"), "has no chat template, and zimage's pipeline formats"),
    ],
    ids=["chroma", "klein", "zimage", "qwenimage", "klein-template", "zimage-template"],
)
def test_a_tokenizer_without_vocabulary_or_chat_template_is_refused_as_it_loads(
    folders, family, mutate, message, tmp_path
):
    folder = changed(folders, family, mutate, tmp_path)
    with pytest.raises(LeditsError, match=rf"^tokenizer \(.*{message}.* copy the tokenizer/ folder"):
        Editor.from_pretrained(str(folder), device="cpu")


def test_qwen_image_needs_no_chat_template(folders, tmp_path):
    """Its pipeline formats prompts with a template of its own, not the tokenizer's."""
    folder = changed(folders, "qwenimage", removed("tokenizer/chat_template*"), tmp_path)
    editor = Editor.from_pretrained(str(folder), device="cpu")
    assert not torch.equal(*editor.model.encode_prompts(["a red hat", "a cat"]).embeds)


def test_another_models_tokenizer_is_refused_where_a_pipeline_becomes_an_editor(folders, tokenizer):
    """From a loaded pipeline too: CLIP's 49,408 tokens do not fit Chroma's T5 vocabulary."""
    pipe = TINY_2026_PIPELINES["chroma"](seed=0)
    with pytest.raises(LeditsError, match=r"tokenizer \(CLIPTokenizer, 49408 tokens\) has more tokens than the 599"):
        Editor.from_pipe({**pipe.components, "tokenizer": tokenizer})


def test_a_loaded_schedulers_bad_value_is_refused_naming_the_scheduler(sd3_folder):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(sd3_folder))
    pipe.scheduler.register_to_config(shift=0)
    with pytest.raises(LeditsError, match="the scheduler's config: shift must be a number > 0; got 0"):
        Editor.from_pipe(pipe)


def test_the_cli_refuses_a_bad_folder_with_one_line(folders, tmp_path, capsys):
    folder = changed(folders, "chroma", removed("tokenizer"), tmp_path)
    photo = tmp_path / "photo.png"
    scene().save(photo)
    out = tmp_path / "out.png"
    code = main(["edit", str(photo), "-e", "+a hat", "--model", str(folder), "-o", str(out), "--device", "cpu"])
    *said, error = capsys.readouterr().err.strip().splitlines()  # the run's start lines, then one error line
    assert code == 2 and error.startswith("leditspp: error:") and "it has no vocabulary" in error
    assert not any("error" in line for line in said) and not out.exists()


@pytest.mark.parametrize(
    ("family", "size", "largest", "message"),
    [
        ("sd3", (64, 576), (64, 512), "at most 512×512: the transformer's pos_embed_max_size is 32 positions of 16"),
        ("zimage", (2064, 64), (2048, 64), "at most 2048×2048: the transformer's axes_lens give 128×128 positions"),
    ],
)
def test_an_image_larger_than_the_position_grid_is_refused_before_the_model_runs(
    folders, family, size, largest, message
):
    editor = Editor.from_pretrained(str(folders[family]), device="cpu")
    height, width = size
    with pytest.raises(LeditsError, match=rf"processed at {width}×{height} \(width×height\), .*{message}.* resize"):
        editor.invert(scene(height, width), steps=2, seed=0)
    assert editor.invert(scene(*largest), steps=1, skip=0.0, seed=0).info.height == largest[0]
