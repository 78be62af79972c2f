"""Shared fixtures: a tiny SD-shaped model saved to disk and loaded back, offline."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*requires torchvision.*")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from leditspp.testing import clip_tokenizer

    return clip_tokenizer(tmp_path_factory.mktemp("clip-tokenizer"))


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory, tokenizer):
    """A tiny SD 1.x model written with ``save_pretrained`` (so loading from disk is exercised)."""
    from leditspp.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline(tokenizer, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def editor(sd_folder):
    from leditspp import Editor

    return Editor.from_pretrained(str(sd_folder), device="cpu")


def scene(height: int = 64, width: int = 64, seed: int = 0) -> Image.Image:
    """A smooth deterministic test picture: a colour gradient with a few discs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([x, y, 1 - x * y], axis=-1) * 0.6 + 0.2
    for _ in range(3):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(6, 16)
        disc = (np.mgrid[0:height, 0:width][0] - cy) ** 2 + (np.mgrid[0:height, 0:width][1] - cx) ** 2 < r**2
        img[disc] = rng.uniform(0, 1, 3)
    return Image.fromarray((img * 255).round().astype(np.uint8))


@pytest.fixture(scope="session")
def tokenizer_2(tmp_path_factory):
    """SDXL's second tokenizer pads with "!" (as SD 2.x does)."""
    from leditspp.testing import clip_tokenizer

    return clip_tokenizer(tmp_path_factory.mktemp("clip-tokenizer-2"), pad_token="!")


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory, tokenizer, tokenizer_2):
    """A tiny SDXL model written with ``save_pretrained``."""
    from leditspp.testing import tiny_sdxl_pipeline

    folder = tmp_path_factory.mktemp("tiny-sdxl")
    tiny_sdxl_pipeline(tokenizer, tokenizer_2, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def xl_editor(sdxl_folder):
    from leditspp import Editor

    return Editor.from_pretrained(str(sdxl_folder), device="cpu")


@pytest.fixture(scope="session")
def tokenizer_t5(tmp_path_factory):
    """A small T5 tokenizer built offline (SD3's third and FLUX's second)."""
    from leditspp.testing import t5_tokenizer

    return t5_tokenizer(tmp_path_factory.mktemp("t5-tokenizer"))


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory, tokenizer, tokenizer_2, tokenizer_t5):
    """A tiny SD3 model written with ``save_pretrained``."""
    from leditspp.testing import tiny_sd3_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd3")
    tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd3_editor(sd3_folder):
    from leditspp import Editor

    return Editor.from_pretrained(str(sd3_folder), device="cpu")


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory, tokenizer, tokenizer_t5):
    """A tiny guidance-distilled FLUX.1 ([dev]-like) model written with ``save_pretrained``."""
    from leditspp.testing import tiny_flux_pipeline

    folder = tmp_path_factory.mktemp("tiny-flux")
    tiny_flux_pipeline(tokenizer, tokenizer_t5, seed=0, guidance_embeds=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def flux_editor(flux_folder):
    from leditspp import Editor

    return Editor.from_pretrained(str(flux_folder), device="cpu")


@pytest.fixture(scope="session")
def tokenizer_if(tmp_path_factory):
    """The small T5 tokenizer with DeepFloyd IF's 77-token window."""
    from leditspp.testing.tiny_if import if_tokenizer

    return if_tokenizer(tmp_path_factory.mktemp("if-tokenizer"))


@pytest.fixture(scope="session")
def if_folder(tmp_path_factory, tokenizer_if):
    """A tiny DeepFloyd IF stage I written with ``save_pretrained``."""
    from leditspp.testing.tiny_if import tiny_if_pipeline

    folder = tmp_path_factory.mktemp("tiny-if")
    tiny_if_pipeline(tokenizer_if, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def if_editor(if_folder):
    from leditspp import Editor

    return Editor.from_pretrained(str(if_folder), device="cpu")
