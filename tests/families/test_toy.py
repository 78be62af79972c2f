"""The toy family (``toy.py``, defined outside the package) in the conformance suite: registered, it is
loaded by ``Editor.from_pipe`` and gets the grid; unregistered, it is refused."""

from __future__ import annotations

import pytest

from leditspp import Editor, LeditsError
from leditspp.models import registered

from .conformance import FamilyTests
from .kernel import Kernel
from .toy import Toy, toy_components


class TestToy(FamilyTests):
    family = "toy"
    adapter = Toy
    size_multiple = 16  # the tiny VAE's 8 × the 2×2 patches
    kernel = Kernel(("",), "attn", "cross")
    refused = (("mask_level", 2), ("max_sequence_length", 64))
    plans = ("model",)  # its network is a plain torch module: no group offloading
    sized_path = False

    def make_pipeline(self, request):
        return toy_components(request.getfixturevalue("tokenizer"))

    def text_ids(self, pipe, prompt):
        return 0, pipe["tokenizer"](prompt, truncation=True, max_length=16).input_ids, 16

    def registration(self):
        return registered(Toy)

    def test_unregistered_it_is_refused_naming_the_families(self, pipe):
        with pytest.raises(LeditsError, match=r"ToyDenoiser models .* not supported; supported families: Stable"):
            Editor.from_pipe(pipe)
