"""SD3/3.5 in the pack, on a tiny MMDiT built in ComfyUI's own classes: exact reconstruction on its
shifted flow path, M¹ from the joint blocks' kernel calls, and the concept tokens of its three text
encoders."""

from __future__ import annotations

import pytest
import torch

from .comfy_env import require_comfyui

require_comfyui()

from leditspp_comfy import text  # noqa: E402
from leditspp_comfy.denoiser import comfy_adapter  # noqa: E402

from leditspp.solvers import FlowPath, NoiseLevel  # noqa: E402

from . import tiny  # noqa: E402
from .test_pack import concept, edit, invert  # noqa: E402


@pytest.fixture(scope="module")
def sd3():
    model, clip = tiny.tiny_sd3()
    return model, clip, tiny.tiny_vae(channels=16)


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [1, 3])
def test_sd3_reconstructs_exactly_and_edits_with_its_joint_attention_mask(sd3, solver, steps):
    model, clip, vae = sd3
    image = tiny.image(seed=steps)
    inversion = invert(sd3, steps=steps, solver=solver, image=image, source_text="a photo" if steps == 3 else "")
    assert torch.equal(edit(model, inversion)[0], vae.encode(image))
    latent, masks = edit(model, inversion, concept(clip, "a red hat"))
    assert not torch.equal(latent, vae.encode(image)) and masks.any()


def test_sd3_runs_on_its_shifted_flow_path(sd3):
    assert comfy_adapter(sd3[0]).path == FlowPath(shift=3.0)


def test_sd3_concept_tokens_are_t5s_else_the_clips():
    """CLIP-L and CLIP-G share the first 77 tokens (start token first); T5's follow them (no start
    token) and are the concept's where a T5 is loaded (as leditspp's own SD3 adapter marks them);
    without a T5 the CLIPs' count."""
    _, clip = tiny.tiny_sd3()
    _, clip_without_t5 = tiny.tiny_sd3(t5=False)
    words = len(clip.tokenizer.clip_l.tokenizer("a red hat")["input_ids"]) - 2
    pieces = len(clip.tokenizer.t5xxl.tokenizer("a red hat")["input_ids"]) - 1
    clips = tuple(range(1, 1 + words))
    assert text.token_positions(clip, "a red hat") == tuple(range(77, 77 + pieces))
    assert text.token_positions(clip_without_t5, "a red hat") == clips
    assert text.encode(clip_without_t5, "a red hat").embeds.shape[1] == 77


def test_sd3_attention_mask_is_the_joint_softmax_of_each_joint_block(sd3):
    """M¹ is the image queries' softmax over [text; image] keys of each joint block's first kernel
    call (the SD3.5 block's image self-attention after it is left out), summed over the concept's
    tokens and averaged over blocks."""
    model, clip, _ = sd3
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(torch.tensor([500.0]), torch.tensor([0.5]), torch.tensor([0.5]))
    got, calls, tokens, positions = tiny.tap_and_kernel_calls(model, clip, x, level, (4, 4))
    assert [k.shape[1] for _, k, _, _ in calls] == [tokens + 16, 16, tokens + 16]
    maps = [tiny.kernel_mask(q, k, heads, positions, tokens) for q, k, heads, _ in (calls[0], calls[2])]
    torch.testing.assert_close(got, torch.stack(maps).mean(0).view(1, 4, 4), rtol=1e-5, atol=1e-7)
