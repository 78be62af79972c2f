"""The tiny offline FLUX.2 [klein], Z-Image, Qwen-Image and Chroma pipelines and Qwen tokenizers."""

from __future__ import annotations

import pytest
import torch

from leditspp.testing import replay_tolerance
from leditspp.testing.tiny2026 import (
    QWEN_IMAGE_SYSTEM,
    QWEN_SPECIAL_TOKENS,
    TINY_2026_PIPELINES,
    qwen_tokenizer,
    tiny_klein_pipeline,
    tiny_qwenimage_pipeline,
    tiny_zimage_pipeline,
)

# diffusers' own Chroma transformer imports FluxPosEmbed from its deprecated place.
pytestmark = pytest.mark.filterwarnings("ignore:`FluxPosEmbed` is deprecated:FutureWarning")

FAMILIES = tuple(TINY_2026_PIPELINES)

#: What ``output_type="latent"`` returns at 64×64 (factor-8 VAEs): klein unpatchified and
#: de-normalised, Z-Image (B, C, H, W), Qwen-Image and Chroma packed 2 × 2 tokens.
LATENT_SHAPES = {
    "klein": (1, 32, 8, 8),
    "zimage": (1, 16, 8, 8),
    "qwenimage": (1, 16, 64),
    "chroma": (1, 16, 64),
}

#: Per family, call arguments without guidance, and with it (its own CFG convention).
NO_CFG = {"klein": {}, "zimage": {"guidance_scale": 0.0}, "qwenimage": {}, "chroma": {"guidance_scale": 1.0}}
CFG = {
    "klein": {"guidance_scale": 3.0},
    "zimage": {"guidance_scale": 3.0},
    "qwenimage": {"true_cfg_scale": 3.0, "negative_prompt": "a blue square"},
    "chroma": {"guidance_scale": 3.0, "negative_prompt": "a blue square"},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models' matmuls are tiny: a second thread only waits on a busy machine (measured: 2 threads
    ran a generation 10–40× slower than 1 while the other core was taken)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def public(config) -> dict:
    """A config without its bookkeeping keys (``_class_name``, ``_name_or_path`` …)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    pipe = TINY_2026_PIPELINES[request.param]()
    pipe.set_progress_bar_config(disable=True)
    return request.param, pipe


def generate(pipe, name: str, prompt: str = "a red circle", output_type: str = "latent", **kwargs):
    args = {**NO_CFG[name], **kwargs}
    generator = torch.Generator().manual_seed(0)
    return pipe(
        prompt=prompt,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=generator,
        output_type=output_type,
        **args,
    ).images


def test_generates_a_64px_image(family):
    name, pipe = family
    latents = generate(pipe, name)
    assert tuple(latents.shape) == LATENT_SHAPES[name]
    assert torch.isfinite(latents).all()
    image = generate(pipe, name, output_type="pil")[0]
    assert image.size == (64, 64)


def test_prompts_change_the_output(family):
    name, pipe = family
    a = generate(pipe, name, "a red circle")
    b = generate(pipe, name, "a yellow cat wearing sunglasses")
    # ≥ 1 % of the latents' scale: far above fp32 noise (≈ 1e-6), so prompts really steer.
    assert (a - b).abs().max() > 0.01 * a.abs().max()


def test_guidance_runs(family):
    name, pipe = family
    if name == "klein":
        pipe = tiny_klein_pipeline(distilled=False)  # [klein] Base: real CFG against ""
        pipe.set_progress_bar_config(disable=True)
    plain = generate(pipe, name)
    guided = generate(pipe, name, **CFG[name])
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().max() > 1e-4


def test_distilled_klein_ignores_guidance():
    pipe = tiny_klein_pipeline(distilled=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.is_distilled
    torch.testing.assert_close(generate(pipe, "klein", guidance_scale=3.0), generate(pipe, "klein"))


def test_round_trips_save_pretrained(family, tmp_path):
    from diffusers import DiffusionPipeline

    name, pipe = family
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(str(tmp_path))
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is type(pipe)
    assert public(loaded.config) == public(pipe.config)  # components and, for klein, is_distilled
    for key, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        ours, theirs = module.state_dict(), getattr(loaded, key).state_dict()
        assert ours.keys() == theirs.keys(), key
        for param in ours:
            torch.testing.assert_close(theirs[param], ours[param], rtol=0, atol=1e-5, msg=f"{key}.{param}")
    assert loaded.tokenizer("a red circle").input_ids == pipe.tokenizer("a red circle").input_ids
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    reference = generate(pipe, name)
    torch.testing.assert_close(generate(loaded, name), reference, rtol=0, atol=replay_tolerance(reference))


def test_builders_are_deterministic_and_leave_the_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = tiny_zimage_pipeline(), tiny_zimage_pipeline(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key in ("transformer", "vae", "text_encoder"):
        for (name, x), (_, y) in zip(
            getattr(a, key).state_dict().items(), getattr(b, key).state_dict().items(), strict=True
        ):
            assert torch.equal(x, y), f"{key}.{name}"
    c = tiny_zimage_pipeline(seed=1)
    assert not torch.equal(a.transformer.x_pad_token, c.transformer.x_pad_token)


# --- Tokenizers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["qwen3", "qwen2.5-vl"])
def test_qwen_tokenizer_round_trips(kind, tmp_path):
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    tokenizer = qwen_tokenizer(kind)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").exists()
    for loaded in (Qwen2TokenizerFast.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is type(tokenizer)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert loaded.chat_template == tokenizer.chat_template
        assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")
        text = "<|im_start|>user\nA purple dog wearing a hat, next to 3 green triangles!<|im_end|>\n"
        assert loaded(text).input_ids == tokenizer(text).input_ids
        assert loaded.decode(tokenizer(text).input_ids) == text


def test_qwen_tokenizer_layout():
    qwen3, vl = qwen_tokenizer("qwen3"), qwen_tokenizer("qwen2.5-vl")
    special = qwen3.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    assert special == list(range(special[0], special[0] + len(QWEN_SPECIAL_TOKENS)))  # Qwen's order, contiguous
    assert vl.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) == special
    assert qwen3.convert_tokens_to_ids(["<think>", "</think>"]) == [len(qwen3) - 2, len(qwen3) - 1]
    assert "<think>" not in vl.get_vocab()
    assert {"<|im_start|>", "<|image_pad|>"} <= set(qwen3.all_special_tokens)
    # The shapes world's words are single tokens, after a space or not.
    for word in ("red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "cat"):
        for text in (word, " " + word, word.capitalize()):
            assert len(qwen3(text).input_ids) == 1, text
    assert len(qwen3(" dog sunglasses hat").input_ids) == 3


def test_qwen3_chat_template_switches_thinking():
    tokenizer = qwen_tokenizer("qwen3")
    messages = [{"role": "user", "content": "a red cat"}]
    render = {
        flag: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=flag)
        for flag in (False, True)
    }
    turn = "<|im_start|>user\na red cat<|im_end|>\n<|im_start|>assistant\n"
    assert render[True] == turn  # Z-Image
    assert render[False] == turn + "<think>\n\n</think>\n\n"  # FLUX.2 [klein]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(render[False]).input_ids)
    assert tokens[:3] == ["<|im_start|>", "user", "Ċ"] and tokens[-4:] == ["<think>", "ĊĊ", "</think>", "ĊĊ"]
    system = [{"role": "system", "content": "Be brief."}, *messages]
    assert tokenizer.apply_chat_template(system, tokenize=False).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_qwen25vl_chat_template_and_qwenimage_prefix():
    tokenizer = qwen_tokenizer("qwen2.5-vl")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a blue square"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>a blue square<|im_end|>\n<|im_start|>assistant\n"
    )
    # QwenImagePipeline drops the template's first 34 tokens: exactly its prefix up to the prompt.
    pipe = tiny_qwenimage_pipeline()
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert prefix == f"<|im_start|>system\n{QWEN_IMAGE_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx == 34
