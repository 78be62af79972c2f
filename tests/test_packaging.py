"""What an install from a clone or a wheel holds: the licence, and the CLIP vocabulary of the tests'
offline tokenizer shipped inside :mod:`leditspp.testing` (no hand-installed package needed)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import leditspp.testing
from leditspp.testing import clip_bpe_path, clip_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "leditspp"


def test_the_clip_vocabulary_ships_in_the_package_with_its_licence(tmp_path, monkeypatch):
    path = clip_bpe_path()
    assert path.parent == Path(leditspp.testing.__file__).parent and path.is_file()
    assert "MIT License" in path.with_name("bpe_simple_vocab_16e6.LICENSE.txt").read_text()
    monkeypatch.setitem(sys.modules, "open_clip", None)  # open-clip-torch is not needed
    tokenizer = clip_tokenizer(tmp_path)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_package_data_covers_the_vocabulary_and_the_demo_models():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["leditspp"]
    shipped = {p for pattern in patterns for p in PACKAGE.glob(pattern)}
    vocab = clip_bpe_path()
    assert {vocab, vocab.with_name("bpe_simple_vocab_16e6.LICENSE.txt")} <= shipped
    for demo in ("demo_model", "demo_flow_model"):
        weights = set((PACKAGE / "demo" / demo).rglob("*.safetensors"))
        assert weights and weights <= shipped


def test_the_licence_file_is_the_one_pyproject_declares():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_the_models_package_exports_what_it_lists_and_every_built_in_family():
    import leditspp.models as models
    from leditspp.models.families import FAMILIES

    assert [name for name in models.__all__ if not hasattr(models, name)] == []
    assert {family.__name__ for family in FAMILIES} <= set(models.__all__)
