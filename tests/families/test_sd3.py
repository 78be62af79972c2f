"""Stable Diffusion 3/3.5 (``StableDiffusion3Pipeline``) in the conformance suite, and SD3.5's q/k
norms under the M¹ check."""

from __future__ import annotations

import pytest
import torch

from leditspp import Editor
from leditspp.models.sd3 import StableDiffusion3
from leditspp.testing import tiny_sd3_pipeline

from .conformance import FamilyTests
from .kernel import Kernel, check_m1

KERNEL = Kernel(("transformer_blocks.",), ".attn", "image_text")


class TestStableDiffusion3(FamilyTests):
    family = "sd3"
    adapter = StableDiffusion3
    size_multiple = 16
    kernel = KERNEL
    sequence_range = (0, 512)
    text_offset = 77  # T5's tokens follow the CLIPs' 77
    call = (("guidance_scale", 1.0),)
    folder_fixture, editor_fixture = "sd3_folder", "sd3_editor"
    sized_path = False

    def make_pipeline(self, request):
        tokenizers = (request.getfixturevalue(name) for name in ("tokenizer", "tokenizer_2", "tokenizer_t5"))
        return tiny_sd3_pipeline(*tokenizers, seed=0)

    def text_ids(self, pipe, prompt):
        return 77, pipe.tokenizer_3(prompt).input_ids, 256


@pytest.fixture(scope="module")
def sd35(tokenizer, tokenizer_2, tokenizer_t5):
    """SD3.5's joint attention: q/k RMS norms, their weights perturbed so that they count."""
    pipe = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0, qk_norm="rms_norm")
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for block in pipe.transformer.transformer_blocks:
            for norm in (block.attn.norm_q, block.attn.norm_k, block.attn.norm_added_k):
                norm.weight.mul_(torch.rand_like(norm.weight) * 3 + 0.2)
    return Editor.from_pipe(pipe)


def test_sd35_m1_is_the_softmax_of_the_kernels_own_inputs(sd35, monkeypatch):
    check_m1(sd35.model, KERNEL, monkeypatch)
