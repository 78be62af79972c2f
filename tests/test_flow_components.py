"""The tiny rectified-flow test components (issue 14): a T5 tokenizer built offline, and SD3 and
FLUX.1 components that diffusers' own pipelines run and that load back from disk."""

from __future__ import annotations

import pytest
import torch

from leditspp.testing import replay_tolerance, t5_tokenizer, tiny_flux_pipeline, tiny_sd3_pipeline


@pytest.fixture(scope="module")
def tokenizer_t5(tmp_path_factory):
    return t5_tokenizer(tmp_path_factory.mktemp("t5-tokenizer"))


def run(pipe, **kwargs) -> torch.Tensor:
    """Two seeded steps at 64 × 64, returning the latents."""
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"height": 64, "width": 64, "num_inference_steps": 2, "output_type": "latent", **kwargs}
    return pipe("a photo of a cat", generator=torch.Generator().manual_seed(0), **kwargs).images


def reloaded(pipe, folder):
    """``pipe`` written with ``save_pretrained`` and read back with ``DiffusionPipeline``: the same
    class, configs and weights, bit for bit."""
    from diffusers import DiffusionPipeline

    pipe.save_pretrained(folder)
    loaded = DiffusionPipeline.from_pretrained(str(folder))
    assert type(loaded) is type(pipe) and loaded.components.keys() == pipe.components.keys()
    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            assert same_weights(part, loaded.components[name]), name
    return loaded


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_replays(latents: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal up to fp32 rounding: weights loaded from safetensors sit at other memory alignments
    than freshly built ones, so CPU kernels may take other vector paths (≈ 1e-7 per call)."""
    torch.testing.assert_close(latents, reference, rtol=0, atol=replay_tolerance(reference))


def test_t5_tokenizer_knows_the_test_words(tokenizer_t5):
    from transformers import T5TokenizerFast

    assert isinstance(tokenizer_t5, T5TokenizerFast)
    assert (tokenizer_t5.pad_token_id, tokenizer_t5.eos_token_id, tokenizer_t5.unk_token_id) == (0, 1, 2)
    ids = tokenizer_t5("a red hat").input_ids
    assert tokenizer_t5.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁hat", "</s>"]
    prompt = "A photo of a Cat, with sunglasses in the snow: a blue square & 2 circles!"
    ids = tokenizer_t5(prompt).input_ids
    assert tokenizer_t5.unk_token_id not in ids
    assert tokenizer_t5.decode(ids, skip_special_tokens=True) == prompt
    padded = tokenizer_t5("a red hat", padding="max_length", max_length=8).input_ids
    assert padded[3:] == [1, 0, 0, 0, 0]


def test_t5_tokenizer_files_are_the_same_every_time(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        t5_tokenizer(folder)
    names = sorted(p.name for p in first.iterdir())
    assert "tokenizer.json" in names and names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)


def test_sd3_components_fit_together(tmp_path, tokenizer, tokenizer_2, tokenizer_t5):
    pipe = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0)
    embeds, _, pooled, _ = pipe.encode_prompt("a red hat", None, None, max_sequence_length=16)
    # CLIP-L ‖ CLIP-G penultimate states (77 × 80) zero-padded to T5's width, then T5's 16 tokens.
    assert embeds.shape == (1, 77 + 16, 96) and pooled.shape == (1, 32 + 48)
    assert not embeds[:, :77, 80:].any() and embeds[:, 77:, 80:].any()
    latents = run(pipe)  # the pipeline's own max_sequence_length (256)
    assert latents.shape == (1, 16, 8, 8) and latents.isfinite().all()
    loaded = reloaded(pipe, tmp_path / "sd3")
    assert loaded.tokenizer_3("a red hat").input_ids == tokenizer_t5("a red hat").input_ids
    assert_replays(run(loaded), latents)
    images = run(loaded, output_type="np", max_sequence_length=16)
    assert images.shape == (1, 64, 64, 3)


def test_sd35_qk_norm(tokenizer, tokenizer_2, tokenizer_t5):
    pipe = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0, qk_norm="rms_norm")
    attention = pipe.transformer.transformer_blocks[0].attn
    assert type(attention.norm_q).__name__ == "RMSNorm" and type(attention.norm_added_k).__name__ == "RMSNorm"
    assert run(pipe, max_sequence_length=16).isfinite().all()


@pytest.mark.parametrize("guidance_embeds", [False, True])
def test_flux_components_fit_together(tmp_path, tokenizer, tokenizer_t5, guidance_embeds):
    pipe = tiny_flux_pipeline(tokenizer, tokenizer_t5, seed=0, guidance_embeds=guidance_embeds)
    embeds, pooled, text_ids = pipe.encode_prompt("a red hat", None, max_sequence_length=16)
    assert embeds.shape == (1, 16, 64) and pooled.shape == (1, 32) and text_ids.shape == (16, 3)
    latents = run(pipe)  # the pipeline's own max_sequence_length (512)
    # Packed: (64 / 8 / 2)² = 16 tokens of 16 channels × 2 × 2.
    assert latents.shape == (1, 16, 64) and latents.isfinite().all()
    loaded = reloaded(pipe, tmp_path / "flux")
    assert loaded.transformer.config.guidance_embeds is guidance_embeds
    assert_replays(run(loaded), latents)
    images = run(loaded, output_type="np", max_sequence_length=16)
    assert images.shape == (1, 64, 64, 3)


def test_components_are_seeded(tokenizer, tokenizer_2, tokenizer_t5):
    first = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0).components
    again = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=0).components
    other = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, seed=1).components
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        assert same_weights(first[name], again[name]) and not same_weights(first[name], other[name]), name
