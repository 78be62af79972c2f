"""Tiny, offline FLUX.2 [klein], Z-Image, Qwen-Image and Chroma pipelines for tests.

Nothing can be downloaded here, so every component is built from a config with a fixed seed, in
fp32, and small enough that a 64×64 image in 2 steps takes well under a second on one CPU core. The
pipelines are diffusers' own classes (``Flux2KleinPipeline``, ``ZImagePipeline``,
``QwenImagePipeline``, ``ChromaPipeline``): they generate with their own ``__call__`` and
round-trip ``save_pretrained`` / ``DiffusionPipeline.from_pretrained``.

The Qwen text encoders need a Qwen tokenizer: :func:`qwen_tokenizer` trains a byte-level BPE on a
few hundred English words (the same pre-tokeniser, normaliser, special tokens and chat templates as
Qwen3 and Qwen2.5-VL) and wraps it as ``Qwen2TokenizerFast``. Chroma's T5 tokenizer is
:func:`leditspp.testing.tokenizers.t5_tokenizer`.

Every builder seeds inside ``torch.random.fork_rng()``: the caller's global RNG is left as it was.
So that prompts steer these random models measurably (two prompts' latents differ by 2–20 % of
their scale), the text encoders get a larger init (:func:`widen_text_init`) and the transformers'
q/k norms a gain of :data:`QK_GAIN` (:func:`sharpen_attention`; klein's gates also ×3).
"""

from __future__ import annotations

import functools
import json
import tempfile
from typing import TYPE_CHECKING, Any, Literal

import torch

from .tiny import (
    FLUX_SCHEDULE,
    FLUX_VAE_FACTORS,
    TINY_FLUX1_TRANSFORMER,
    eval_mode,
    seeded,
    t5_text_encoder,
    tiny_flow_vae,
)
from .tokenizers import t5_corpus, t5_tokenizer

if TYPE_CHECKING:
    from diffusers import ChromaPipeline, Flux2KleinPipeline, QwenImagePipeline, ZImagePipeline
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2TokenizerFast, Qwen3ForCausalLM

QwenKind = Literal["qwen3", "qwen2.5-vl"]

# --- Qwen tokenizer ---------------------------------------------------------------------------------

#: Qwen-Image's system sentence (``QwenImagePipeline.prompt_template_encode``); with the chat
#: tokens around it, the template's prefix is the 34 tokens the pipeline drops.
QWEN_IMAGE_SYSTEM = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background:"
)

#: Qwen2.5-VL's default system turn.
QWEN25VL_DEFAULT_SYSTEM = "You are a helpful assistant."

#: Qwen's special tokens, in Qwen's id order (``<|endoftext|>`` = 151643 in the real vocabulary).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Added tokens that are not special (they are not skipped when decoding), after the special ones.
QWEN_ADDED_TOKENS: dict[str, tuple[str, ...]] = {
    "qwen2.5-vl": ("<tool_call>", "</tool_call>"),
    "qwen3": ("<tool_call>", "</tool_call>", "<think>", "</think>"),
}

#: Qwen3's chat template reduced to string turns and the thinking switch: with
#: ``enable_thinking=False`` (FLUX.2 [klein]) the generation prompt closes an empty think block;
#: Z-Image passes ``True`` and gets the bare ``<|im_start|>assistant\n``.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

#: Qwen2.5-VL's chat template: a default system turn, text and image/video parts.
QWEN25VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN25VL_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part %}"
    "{{- part['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

QWEN_CHAT_TEMPLATES: dict[str, str] = {"qwen3": QWEN3_CHAT_TEMPLATE, "qwen2.5-vl": QWEN25VL_CHAT_TEMPLATE}

#: Common English words the tiny Qwen tokenizer keeps whole (plain, capitalised, with and without
#: the leading space), besides the words of :func:`leditspp.testing.tokenizers.t5_corpus` (the shapes world:
#: colours, shapes, cat, dog, sunglasses, hat …).
_QWEN_WORDS_TEXT = """
the be to of and a in that have i it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me when
make can like time no just him know take people into year your good some could them see other than
then now look only come its over think also back after use two how our work first well way even new
want because any these give day most us very image picture scene background foreground left right
top bottom center middle above below behind near front side color colour shape size texture quantity
text spatial relationships objects object detailing describe show showing shows photograph drawing
render rendering style art light shadow sky ground floor wall window door room street tree flower
water grass field beach forest mountain river sunny night morning evening winter summer spring
autumn wearing holding sitting standing running walking looking smiling happy sad cute little large
huge tiny soft hard smooth rough shiny dark bright pale deep colorful simple plain flat three four
five many few several each both two one single pair group small big old young man woman person boy
girl child face hair eyes head hand nose mouth ears shirt dress jacket glasses crown scarf bow tie
red green blue yellow purple orange circle square triangle cat dog sunglasses hat assistant user
system helpful
"""
QWEN_WORDS = tuple(_QWEN_WORDS_TEXT.split())

#: Short prompts in the shapes world, for tests.
QWEN_PROMPTS = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow cat wearing sunglasses",
    "a purple dog wearing a hat",
    "an orange square next to a blue circle",
)


def qwen_corpus() -> list[str]:
    """The text the tiny Qwen BPE is trained on: :func:`~leditspp.testing.t5_corpus`,
    :data:`QWEN_PROMPTS`, Qwen-Image's system sentence, the chat turns' role lines (without the
    special tokens, which are added after training) and every word of :data:`QWEN_WORDS` and the
    corpora alone, capitalised and after a space, so each stays one token wherever it appears."""
    lines = [*t5_corpus(), *QWEN_PROMPTS, QWEN_IMAGE_SYSTEM, QWEN25VL_DEFAULT_SYSTEM]
    lines += [f"{role}\n{line}" for role in ("system", "user", "assistant") for line in lines[:8]]
    lines += ["assistant\n", "\n\n", "user\n\n"]
    words = set(QWEN_WORDS)
    for line in lines:
        words.update(line.replace(",", " ").replace(":", " ").replace(".", " ").split())
    for word in sorted(words):
        lines += [word, " " + word, word.capitalize(), " " + word.capitalize()]
    return lines


@functools.lru_cache(maxsize=1)
def qwen_bpe() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """The byte-level BPE trained on :func:`qwen_corpus`: (vocabulary items, merges), before
    Qwen's added tokens. Deterministic (the trainer breaks ties by pair order); cached."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    backend = Tokenizer(BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=100_000,  # more than the corpus can fill: every pre-token ends as one piece
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(qwen_corpus(), trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = tuple(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = tuple((a, b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in model["merges"]))
    return vocab, merges


def qwen_tokenizer(kind: QwenKind = "qwen3") -> Qwen2TokenizerFast:
    """A Qwen-shaped ``Qwen2TokenizerFast`` built offline (a new object on each call).

    ``kind`` "qwen3" (FLUX.2 [klein], Z-Image) or "qwen2.5-vl" (Qwen-Image). The BPE is
    :func:`qwen_bpe` (about 2,000 pieces); after it come Qwen's special tokens in Qwen's order
    (:data:`QWEN_SPECIAL_TOKENS`), then the non-special :data:`QWEN_ADDED_TOKENS` of ``kind``.
    ``eos_token`` = ``<|im_end|>``, ``pad_token`` = ``<|endoftext|>``, no BOS/UNK, as the instruct
    checkpoints ship; the chat template is :data:`QWEN_CHAT_TEMPLATES` [``kind``] (saved as
    ``chat_template.jinja``).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    if kind not in QWEN_CHAT_TEMPLATES:
        raise ValueError(f"unknown Qwen tokenizer kind {kind!r}; one of {tuple(QWEN_CHAT_TEMPLATES)}")
    items, merges = qwen_bpe()
    vocab = dict(items)
    added = [*QWEN_SPECIAL_TOKENS, *QWEN_ADDED_TOKENS[kind]]
    for token in added:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        chat_template=QWEN_CHAT_TEMPLATES[kind],
        model_max_length=131072,
        errors="replace",
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS[kind]])
    if tokenizer.convert_tokens_to_ids(added) != [vocab[t] for t in added]:
        raise RuntimeError("the added tokens did not keep their places after the BPE vocabulary")
    return tokenizer


def text_encoder_vocab_size(tokenizer: Any, multiple: int = 64) -> int:
    """A vocabulary size above ``len(tokenizer)``, rounded up to ``multiple`` (as real checkpoints pad)."""
    return (len(tokenizer) // multiple + 1) * multiple


# --- Shared helpers ---------------------------------------------------------------------------------


def widen_text_init(model: Any, std: float = 1.0) -> Any:
    """Draw ``model``'s input token embeddings from N(0, ``std``²): with its config's larger
    ``initializer_range`` this makes a tiny random LLM's states depend on the prompt enough to
    steer a tiny transformer (the default 0.02 init barely does)."""
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, std)
    return model


def qwen3_text_encoder(
    tokenizer: Any,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 8,
    intermediate: int = 64,
    init: float = 0.2,
    vocab: int | None = None,
) -> Qwen3ForCausalLM:
    """A randomly initialised ``Qwen3ForCausalLM`` for ``tokenizer`` (grouped-query attention with
    q/k RMS norms, as Qwen3), weights N(0, ``init``²), token embeddings N(0, 1). ``vocab``: the
    embedding rows (default: the tokenizer's, rounded up; a real checkpoint's for its memory).
    Call it seeded."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab or text_encoder_vocab_size(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=2048,
        initializer_range=init,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return widen_text_init(Qwen3ForCausalLM(config)).eval()


def qwen25vl_text_encoder(
    tokenizer: Any,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate: int = 64,
    mrope_section: tuple[int, int, int] = (2, 3, 3),
    init: float = 0.2,
    vocab: int | None = None,
) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` for ``tokenizer``: a text
    model of width ``hidden`` (head dim ``hidden / heads``, multimodal RoPE whose
    ``mrope_section`` sums to half the head dim) and a one-block vision tower of width 16
    (patch 14, merge 2) projecting to ``hidden``; its image/video/vision-start/end token ids are
    the tokenizer's. Weights N(0, ``init``²), token embeddings N(0, 1); ``vocab`` as for
    :func:`qwen3_text_encoder`. Call it seeded."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if 2 * sum(mrope_section) != hidden // heads:
        raise ValueError(f"mrope_section {mrope_section} must sum to half the head dim {hidden // heads}")
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)), strict=True))
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab or text_encoder_vocab_size(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 2048,
            "initializer_range": init,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": list(mrope_section),
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
            "initializer_range": init,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    return widen_text_init(Qwen2_5_VLForConditionalGeneration(config)).eval()


#: How much the builders scale the transformers' q/k RMS-norm weights (see :func:`sharpen_attention`).
QK_GAIN = 4.0


def sharpen_attention(transformer: torch.nn.Module, gain: float = QK_GAIN) -> torch.nn.Module:
    """Multiply the weights of every q/k RMS norm of ``transformer`` (``norm_q``, ``norm_k``,
    ``norm_added_q``, ``norm_added_k``) by ``gain``: attention logits grow by ``gain``², so a
    tiny random transformer attends to particular tokens (trained q/k norms are large too) and
    the prompt steers its output several times more than at the unit init."""
    names = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")
    with torch.no_grad():
        for module in transformer.modules():
            for name in names:
                weight = getattr(getattr(module, name, None), "weight", None)
                if isinstance(weight, torch.Tensor):
                    weight.mul_(gain)
    return transformer


# --- FLUX.2 [klein] ---------------------------------------------------------------------------------

#: FLUX.2's scheduler config: dynamic exponential shift; the pipeline passes its own sigmas
#: linspace(1, 1/N, N) and ``mu = compute_empirical_mu(image_seq_len, N)``.
KLEIN_SCHEDULE = {**FLUX_SCHEDULE, "time_shift_type": "exponential"}

#: The Qwen3 layers whose hidden states the klein pipeline stacks (its default).
KLEIN_TEXT_LAYERS = (9, 18, 27)

#: How much :func:`tiny_klein_components` scales the transformer's modulation weights (the gates).
KLEIN_GATE_GAIN = 3.0


def tiny_klein_components(*, seed: int = 0, text_layers: int = 28) -> dict[str, Any]:
    """FLUX.2 [klein]-shaped but tiny components, random weights.

    Text: Qwen3 of width 32 with ``text_layers`` layers (≥ 28, so the pipeline's hidden states
    9, 18, 27 are intermediate ones), stacked by the pipeline to 3 × 32 = 96 =
    ``joint_attention_dim``; prompts are padded to 512 tokens. Transformer
    (``Flux2Transformer2DModel``): 1 double- and 1 single-stream block, 2 heads × 16 = 32 wide,
    RoPE axes (4, 4, 4, 4) over (t, h, w, l), ``in_channels`` 128 = 32 latent channels patchified
    2 × 2, no guidance embedding. VAE (``AutoencoderKLFlux2``): factor 8, widths 16/16/32/32, 32
    latent channels; its BatchNorm's running statistics (random, fixed by ``seed``) normalise the
    patchified latents. Scheduler: :data:`KLEIN_SCHEDULE`. The transformer's q/k norms are scaled by
    :data:`QK_GAIN` and its modulation (gates) by :data:`KLEIN_GATE_GAIN`.
    """
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    if text_layers <= max(KLEIN_TEXT_LAYERS):
        raise ValueError(
            f"klein reads hidden states {KLEIN_TEXT_LAYERS}: use more than {max(KLEIN_TEXT_LAYERS)} layers"
        )
    tokenizer = qwen_tokenizer("qwen3")
    with seeded(seed):
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=128,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=3 * 32,
            timestep_guidance_channels=64,
            axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=False,
        )
        sharpen_attention(transformer)
        with torch.no_grad():  # O(1) gates, as trained ones: the text's attention output is not drowned
            for modulation in (
                "double_stream_modulation_img",
                "double_stream_modulation_txt",
                "single_stream_modulation",
            ):
                getattr(transformer, modulation).linear.weight.mul_(KLEIN_GATE_GAIN)
    with seeded(seed + 1):
        vae = AutoencoderKLFlux2(
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            latent_channels=32,
            norm_num_groups=8,
            sample_size=128,
        )
        channels = vae.bn.num_features
        vae.bn.running_mean.copy_(0.5 * torch.randn(channels))
        vae.bn.running_var.copy_(torch.empty(channels).uniform_(0.25, 4.0))
    with seeded(seed + 2):
        text_encoder = qwen3_text_encoder(tokenizer, hidden=32, layers=text_layers)
    return eval_mode(
        {
            "scheduler": FlowMatchEulerDiscreteScheduler(**KLEIN_SCHEDULE),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
    )


def tiny_klein_pipeline(*, seed: int = 0, distilled: bool = True, text_layers: int = 28) -> Flux2KleinPipeline:
    """A ``Flux2KleinPipeline`` around :func:`tiny_klein_components`. ``distilled=True`` is the
    step-distilled [klein] (``is_distilled``: ``guidance_scale`` ignored, no CFG); ``False`` is
    [klein] Base (real CFG against the empty prompt when ``guidance_scale > 1``)."""
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline(**tiny_klein_components(seed=seed, text_layers=text_layers), is_distilled=distilled)


# --- Z-Image ----------------------------------------------------------------------------------------

#: Z-Image's scheduler: static shift 3 (the pipeline passes sigmas linspace(1, 1/N, N) and a
#: ``mu`` that static shifting ignores).
ZIMAGE_SCHEDULE = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}


def tiny_zimage_components(*, seed: int = 0, shift: float = 3.0) -> dict[str, Any]:
    """Z-Image-shaped but tiny components, random weights.

    Text: Qwen3 of width 32, 2 layers; the pipeline takes ``hidden_states[-2]`` of the
    unpadded tokens (``cap_feat_dim`` 32). Transformer (``ZImageTransformer2DModel``): single
    stream, width 64, 4 heads × 16 (RoPE axes (4, 6, 6)), 1 noise-refiner, 1 context-refiner and 1
    main layer, patch 2. VAE: FLUX.1's shape (:func:`~leditspp.testing.tiny_flow_vae`: factor 8,
    16 channels, scaling 0.3611, shift 0.1159). Scheduler: flow-matching Euler, static ``shift``
    (3, as Z-Image-Turbo ships). Turbo and base differ only in weights and call arguments
    (Turbo: ``guidance_scale=0``, few steps).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    tokenizer = qwen_tokenizer("qwen3")
    with seeded(seed):
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=64,
            n_layers=1,
            n_refiner_layers=1,
            n_heads=4,
            n_kv_heads=4,
            cap_feat_dim=32,
            axes_dims=[4, 6, 6],
            axes_lens=[1024, 128, 128],
        )
        sharpen_attention(transformer)
        # Real checkpoints' pad tokens are trained, not zero.
        with torch.no_grad():
            transformer.x_pad_token.normal_(0.0, 0.5)
            transformer.cap_pad_token.normal_(0.0, 0.5)
    with seeded(seed + 1):
        vae = tiny_flow_vae(seed + 1, **FLUX_VAE_FACTORS)  # seeds the global RNG: keep it inside
    with seeded(seed + 2):
        text_encoder = qwen3_text_encoder(tokenizer, hidden=32, layers=2)
    return eval_mode(
        {
            "scheduler": FlowMatchEulerDiscreteScheduler(**{**ZIMAGE_SCHEDULE, "shift": shift}),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
    )


def tiny_zimage_pipeline(*, seed: int = 0, shift: float = 3.0) -> ZImagePipeline:
    """A ``ZImagePipeline`` around :func:`tiny_zimage_components`. Its CFG runs when
    ``guidance_scale > 0`` (``pred = cond + g·(cond − uncond)``); pass 0 for Turbo-style calls."""
    from diffusers import ZImagePipeline

    return ZImagePipeline(**tiny_zimage_components(seed=seed, shift=shift))


# --- Qwen-Image -------------------------------------------------------------------------------------

#: Qwen-Image's scheduler config: exponential dynamic shift, μ linear in the image token count
#: from 0.5 at 256 to 0.9 at 8192 tokens, then stretched to end at sigma 0.02.
QWENIMAGE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}


def tiny_qwenimage_components(*, seed: int = 0) -> dict[str, Any]:
    """Qwen-Image-shaped but tiny components, random weights.

    Text: Qwen2.5-VL (:func:`qwen25vl_text_encoder`: width 32, 2 layers, one-block vision tower);
    the pipeline takes the last hidden states after dropping the template's 34-token prefix
    (``joint_attention_dim`` 32). Transformer (``QwenImageTransformer2DModel``): 2 double-stream
    blocks, 2 heads × 16 = 32 wide, RoPE axes (4, 6, 6), ``in_channels`` 64 = 16 channels packed
    2 × 2, ``out_channels`` 16. VAE (``AutoencoderKLQwenImage``): base width 8, multipliers
    1/2/4/4, one res block per level, factor 8, 16 channels with Qwen-Image's real
    ``latents_mean``/``latents_std``, 5-D (B, C, T, H, W) latents. Scheduler: :data:`QWENIMAGE_SCHEDULE`.
    """
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    tokenizer = qwen_tokenizer("qwen2.5-vl")
    with seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            axes_dims_rope=(4, 6, 6),
        )
        sharpen_attention(transformer)
    with seeded(seed + 1):
        vae = AutoencoderKLQwenImage(
            base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    with seeded(seed + 2):
        text_encoder = qwen25vl_text_encoder(tokenizer, hidden=32, layers=2)
    return eval_mode(
        {
            "scheduler": FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULE),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
    )


def tiny_qwenimage_pipeline(*, seed: int = 0) -> QwenImagePipeline:
    """A ``QwenImagePipeline`` around :func:`tiny_qwenimage_components`. CFG runs only with
    ``true_cfg_scale > 1`` and a negative prompt (default ``true_cfg_scale`` 4)."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline(**tiny_qwenimage_components(seed=seed))


# --- Chroma -----------------------------------------------------------------------------------------


def tiny_chroma_components(*, seed: int = 0) -> dict[str, Any]:
    """Chroma-shaped but tiny components, random weights.

    Text: T5 only (:func:`~leditspp.testing.t5_tokenizer`, and a T5 encoder of width 64 =
    ``joint_attention_dim``); no pooled text and no guidance input — the pipeline masks all pad
    tokens but the first. Transformer (``ChromaTransformer2DModel``): 1 double- and 1
    single-stream block, 2 heads × 16 = 32 wide, RoPE axes (4, 6, 6), ``in_channels`` 64 = 16
    channels packed 2 × 2, a 1-layer, 32-wide modulation approximator. VAE: FLUX.1's
    (:func:`~leditspp.testing.tiny_flow_vae`, scaling 0.3611, shift 0.1159). Scheduler: FLUX.1-dev's
    dynamic shift (:data:`~leditspp.testing.FLUX_SCHEDULE`).
    """
    from diffusers import ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    with tempfile.TemporaryDirectory(prefix="tiny-t5-") as folder:
        tokenizer = t5_tokenizer(folder)
    with seeded(seed):
        transformer = ChromaTransformer2DModel(
            **TINY_FLUX1_TRANSFORMER,
            approximator_num_channels=32,
            approximator_hidden_dim=32,
            approximator_layers=1,
        )
        sharpen_attention(transformer)
    with seeded(seed + 1):
        vae = tiny_flow_vae(seed + 1, **FLUX_VAE_FACTORS)  # seeds the global RNG: keep it inside
    with seeded(seed + 2):
        text_encoder = t5_text_encoder(tokenizer, 64, layers=2, heads=4, head_dim=8, ff=128)
    return eval_mode(
        {
            "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
    )


def tiny_chroma_pipeline(*, seed: int = 0) -> ChromaPipeline:
    """A ``ChromaPipeline`` around :func:`tiny_chroma_components` (no IP-Adapter image encoder).
    CFG runs when ``guidance_scale > 1`` (default 5) against ``negative_prompt`` or ""."""
    from diffusers import ChromaPipeline

    return ChromaPipeline(**tiny_chroma_components(seed=seed), image_encoder=None, feature_extractor=None)


#: The builders by family name.
TINY_2026_PIPELINES = {
    "klein": tiny_klein_pipeline,
    "zimage": tiny_zimage_pipeline,
    "qwenimage": tiny_qwenimage_pipeline,
    "chroma": tiny_chroma_pipeline,
}
