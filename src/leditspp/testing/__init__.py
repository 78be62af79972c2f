"""Tiny, offline, SD-shaped components for tests, benchmarks and examples.

No weights can be downloaded here, so these build models from configs with fixed seeds. The
tokenizer is the real CLIP BPE tokenizer, derived from the vocabulary file that the PyPI package
``open-clip-torch`` ships (installed without its dependencies; it is never imported).
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import importlib.util
import json
import math
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: SD 1.x's training schedule, used by the tiny models.
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}


#: Replays (a scale-0 concept re-runs the network at every step) and batch-vs-alone comparisons
#: stack the network's rows differently from the run they are compared with; fp32 kernels then
#: differ in the last bits (≈1e-7 relative per call) and the solver's steps carry that along.
#: Measured on the tiny test models: up to 1.0e-4 with latents of max |x| ≈ 2–4. The bound is
#: 1e-3 of the reference's largest magnitude: ≥ 20× that noise floor, and far below what a real
#: defect gives (another image's noise maps: ≈ 1, see tests/test_exactness.py).
FP32_REPLAY_RTOL = 1e-3


def replay_tolerance(reference: torch.Tensor) -> float:
    """The largest difference fp32 rounding explains between two runs near ``reference``."""
    return FP32_REPLAY_RTOL * reference.abs().max().item()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table used by the BPE vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the CLIP vocabulary: pip install --no-deps open-clip-torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer (49,408 tokens) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder


def clip_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """A real ``CLIPTokenizer`` (model_max_length 77) built offline in ``folder``.

    ``kwargs`` go to the tokenizer, e.g. ``pad_token="!"`` as in SD 2.x and SDXL's second tokenizer.
    """
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, **kwargs)


def clip_text_encoder(tokenizer: Any, width: int, *, layers: int, heads: int, intermediate: int, **config: Any) -> Any:
    """A randomly initialised CLIP text encoder for ``tokenizer`` (77 positions); with
    ``projection_dim`` in ``config`` the projected variant (SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if "projection_dim" in config else CLIPTextModel
    return cls(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **config,
        )
    )


def tiny_vae(seed: int, **config: Any) -> Any:
    """A factor-8 ``AutoencoderKL`` (widths 16/16/32/32) with random weights; ``config`` adds to it."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        latent_channels=4,
        norm_num_groups=8,
        **config,
    )


def tiny_sd_components(
    tokenizer: Any, *, seed: int = 0, prediction_type: str = "epsilon", cross_attention_dim: int = 32
) -> dict[str, Any]:
    """SD-1.x-shaped but tiny components (UNet widths 32/32/64/64, VAE factor 8), random weights."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = tiny_vae(seed + 1, sample_size=256)
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, cross_attention_dim, layers=2, heads=4, intermediate=64)
    scheduler = PNDMScheduler(
        **SD_SCHEDULE,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )
    for m in (unet, vae, text_encoder):
        m.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tiny_sdxl_components(tokenizer: Any, tokenizer_2: Any, *, seed: int = 0) -> dict[str, Any]:
    """SDXL-shaped but tiny components: two CLIP encoders of different widths (32, and 48 with a
    40-dim projection), a 3-level UNet with ``addition_embed_type="text_time"`` (cross-attention
    width 80 = 32 + 48), a factor-8 VAE with ``force_upcast``, and SDXL's Euler scheduler config."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 40,
        cross_attention_dim=32 + 48,
        norm_num_groups=8,
    )
    vae = tiny_vae(seed + 1, sample_size=128, scaling_factor=0.13025, force_upcast=True)
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, 32, layers=3, heads=4, intermediate=64, hidden_act="gelu")
    torch.manual_seed(seed + 3)
    text_encoder_2 = clip_text_encoder(
        tokenizer, 48, layers=3, heads=4, intermediate=96, hidden_act="gelu", projection_dim=40
    )
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading")
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
    }


#: The scheduler configs few-step checkpoints ship, on the SD training schedule: SD-Turbo and
#: SDXL-Turbo (Euler, trailing), SDXL-Lightning / Hyper-SD (as their model cards set it: Euler or
#: DDIM, trailing) and LCM (LCMScheduler: 50 original steps, timestep_scaling 10).
FEW_STEP_SCHEDULERS = ("turbo", "lightning", "lcm")


def few_step_scheduler(kind: str) -> Any:
    """The scheduler a few-step checkpoint of ``kind`` (see :data:`FEW_STEP_SCHEDULERS`) ships."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler

    if kind == "turbo":
        return EulerAncestralDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="trailing")
    if kind == "lightning":
        return DDIMScheduler(**SD_SCHEDULE, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    if kind == "lcm":
        return LCMScheduler(**SD_SCHEDULE, original_inference_steps=50, timestep_scaling=10.0)
    raise ValueError(f"unknown few-step kind {kind!r}; one of {FEW_STEP_SCHEDULERS}")


def tiny_sdxl_pipeline(tokenizer: Any, tokenizer_2: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusionXLPipeline`` around :func:`tiny_sdxl_components` (no watermarker)."""
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**tiny_sdxl_components(tokenizer, tokenizer_2, **kwargs), add_watermarker=False)


def tiny_sd_pipeline(tokenizer: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusionPipeline`` around :func:`tiny_sd_components` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **tiny_sd_components(tokenizer, **kwargs),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def diffusers_port_xl(model: Any, scheduler: Any) -> Any:
    """diffusers' ``LEditsPPPipelineStableDiffusionXL`` on the components of an SDXL adapter."""
    from diffusers import LEditsPPPipelineStableDiffusionXL

    port = LEditsPPPipelineStableDiffusionXL(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    port.set_progress_bar_config(disable=True)
    return port


def diffusers_port(model: Any, scheduler: Any) -> Any:
    """diffusers' ``LEditsPPPipelineStableDiffusion`` on the components of an SD adapter.

    The port replaces the UNet's attention processors; wrap its use in
    :func:`keep_attention_processors` when the UNet is shared.
    """
    from diffusers import LEditsPPPipelineStableDiffusion

    port = LEditsPPPipelineStableDiffusion(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    port.set_progress_bar_config(disable=True)
    return port


def exact_port_scheduler(**config: Any) -> Any:
    """The scheduler that lets diffusers' LEdits++ port invert exactly: SDE-DPM-Solver++(2M) on
    :data:`SD_SCHEDULE` (plus ``config``) ending at the smallest training noise level."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        {**SD_SCHEDULE, **config}, algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="sigma_min"
    )


def port_edit_arguments(edits: Any, steps: int, *, threshold_zero: bool = False) -> dict[str, list]:
    """The edit arguments of diffusers' LEdits++ pipelines for ``edits`` (a sequence of
    :class:`~leditspp.Edit`): same concepts, directions, scales, thresholds and activity windows.
    ``threshold_zero`` sets every threshold to 0 (the port's way to switch the noise mask off)."""
    return {
        "editing_prompt": [e.prompt for e in edits],
        "reverse_editing_direction": [e.remove for e in edits],
        "edit_guidance_scale": [e.scale for e in edits],
        "edit_threshold": [0.0 if threshold_zero else e.threshold for e in edits],
        "edit_warmup_steps": [e.warmup_steps for e in edits],
        "edit_cooldown_steps": [steps if e.cooldown_steps is None else e.cooldown_steps for e in edits],
    }


@contextlib.contextmanager
def keep_attention_processors(unet: Any) -> Iterator[None]:
    """Give ``unet`` its attention processors back on exit."""
    processors = dict(unet.attn_processors)
    try:
        yield
    finally:
        unet.set_attn_processor(processors)


# --- Rectified-flow families (SD3/3.5, FLUX.1): a T5 tokenizer and tiny MMDiT components -----------

#: The English the tiny T5 tokenizer knows as whole words: test prompts, edit concepts and the
#: captions of a few ordinary photos. Word counts (and so the pieces' scores) come from it.
T5_CORPUS = (
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a cat wearing a red hat",
    "a photo of a dog wearing sunglasses",
    "a portrait of a man with a beard and glasses",
    "a portrait of a woman with long hair and a smile",
    "a close up photo of a face",
    "a house in the snow",
    "snow on the trees in winter",
    "a red square and a blue circle on a white background",
    "a green triangle next to a yellow star",
    "a painting of a mountain lake at sunset",
    "an oil painting in the style of van gogh",
    "a watercolor drawing of flowers",
    "a bowl of fruit on a wooden table",
    "a car on a road in the city",
    "a horse in a field of grass",
    "a boat on the sea under a cloudy sky",
    "a bird sitting on a branch",
    "a child playing with a ball in the park",
    "a cup of coffee and a book",
    "an old man wearing a hat",
    "a young girl wearing a crown",
    "a smiling person with a mask",
    "a cartoon of a robot",
    "a pencil sketch of a building",
    "the sun and the moon",
    "rain fire water light dark",
    "big small tall short round bright",
    "high quality detailed realistic blurry",
    "stone glass metal wood paper",
    "add remove make turn into from to by for is are",
)

#: Colours and shapes, every pairing of which joins the corpus ("a red square", …).
T5_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
T5_SHAPES = ("square", "circle", "triangle", "star", "heart", "disc", "ring", "cube", "sphere", "hat")

#: Characters every prompt may fall back to, one piece each, so ASCII text never becomes ``<unk>``.
T5_ALPHABET = string.ascii_letters + string.digits + string.punctuation


def t5_corpus() -> list[str]:
    """:data:`T5_CORPUS` plus "a {colour} {shape}" for every colour and shape."""
    return [*T5_CORPUS, *(f"a {c} {s}" for c in T5_COLOURS for s in T5_SHAPES)]


def t5_unigram_pieces(corpus: list[str]) -> list[tuple[str, float]]:
    """The pieces and log-probability scores of a word-level Unigram model of ``corpus``.

    T5's special tokens come first (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2). Each word ``w``
    with count ``n`` of ``N`` gives ``▁w`` (score ``ln(n/N)``) and, 2 nats less likely, ``w``
    without the word-start marker ``▁`` and ``▁W`` capitalised; ``▁`` and the characters of
    :data:`T5_ALPHABET` score 5 nats below the rarest word, so known words stay whole and others
    spell out. Sorted by score, then piece: the same list every time.
    """
    counts = collections.Counter(w for line in corpus for w in line.split())
    total = sum(counts.values())
    scores: dict[str, float] = {}
    for word, n in counts.items():
        score = math.log(n / total)
        scores["▁" + word] = score
        scores.setdefault(word, score - 2.0)
        scores.setdefault("▁" + word.capitalize(), score - 2.0)
    floor = min(scores.values()) - 5.0
    for char in ["▁", *T5_ALPHABET]:
        scores.setdefault(char, floor)
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return specials + sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def t5_backend_tokenizer(pieces: list[tuple[str, float]]) -> Any:
    """A ``tokenizers.Tokenizer`` shaped like T5's: Unigram over ``pieces`` (``<unk>`` = 2), split
    on whitespace with the Metaspace ``▁`` prefix, ``</s>`` (id 1) appended to every sequence."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    metaspace = {"replacement": "▁", "prepend_scheme": "always", "split": True}
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(**metaspace)]
    )
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return backend


def t5_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """A T5-style ``T5TokenizerFast`` built offline, saved to ``folder`` and loaded back from it.

    A word-level Unigram model of :func:`t5_corpus` (about 500 pieces, plus T5's 100 ``<extra_id_*>``
    sentinels; see :func:`t5_unigram_pieces`) — not trained with ``tokenizers``' Unigram trainer,
    which on a corpus this small splits "red" into "re" + "d" and gives slightly different scores
    from run to run. ``kwargs`` go to the tokenizer; ``model_max_length`` defaults to 512, as in
    SD3's and FLUX.1's T5 tokenizers (the pipelines pass their own ``max_sequence_length``).
    """
    from transformers import T5TokenizerFast

    kwargs.setdefault("model_max_length", 512)
    backend = t5_backend_tokenizer(t5_unigram_pieces(t5_corpus()))
    T5TokenizerFast(tokenizer_object=backend, **kwargs).save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))


def t5_text_encoder(tokenizer: Any, width: int, *, layers: int, heads: int, head_dim: int, ff: int) -> Any:
    """A randomly initialised ``T5EncoderModel`` for ``tokenizer``, shaped like T5 v1.1 (gated-GELU
    feed-forward of width ``ff``, untied embeddings, relative position buckets); ``width`` = d_model."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=head_dim,
            d_ff=ff,
            num_layers=layers,
            num_heads=heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            tie_word_embeddings=False,
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def tiny_flow_vae(seed: int, *, shift_factor: float, scaling_factor: float) -> Any:
    """A factor-8 ``AutoencoderKL`` (widths 16/16/32/32) with 16 latent channels and no quant
    convolutions, as SD3's and FLUX.1's VAEs: latents enter the transformer as
    ``(z − shift_factor) · scaling_factor``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        latent_channels=16,
        norm_num_groups=8,
        sample_size=128,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


#: SD3/3.5's VAE latent normalisation and scheduler (static shift 3).
SD3_VAE_FACTORS = {"shift_factor": 0.0609, "scaling_factor": 1.5305}
SD3_SCHEDULE = {"num_train_timesteps": 1000, "shift": 3.0}

#: FLUX.1's VAE latent normalisation and scheduler ([dev]: shift μ linear in the image token
#: count, 0.5 at 256 tokens to 1.15 at 4096).
FLUX_VAE_FACTORS = {"shift_factor": 0.1159, "scaling_factor": 0.3611}
FLUX_SCHEDULE = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def tiny_sd3_components(
    tokenizer: Any, tokenizer_2: Any, tokenizer_3: Any, *, seed: int = 0, qk_norm: str | None = None
) -> dict[str, Any]:
    """SD3-shaped but tiny components, random weights.

    Text: two projected CLIP encoders (widths 32 and 48, projections 32 and 48; SD3's CLIP-L and
    CLIP-G) and a T5 encoder of width 96. The pipeline concatenates the CLIPs' penultimate hidden
    states (77 × 80), zero-pads them to T5's width and stacks T5's states after them:
    ``encoder_hidden_states`` is (B, 77 + max_sequence_length, 96), so ``joint_attention_dim`` = 96,
    the T5 width; the pooled projections concatenate to ``pooled_projection_dim`` = 80.
    MMDiT: 2 joint blocks, 4 heads × 8 = 32 wide, patch 2, ``sample_size`` 8 (64 px by default),
    positions for up to 32 × 32 patches (512 px). ``qk_norm="rms_norm"`` gives SD3.5's q/k norm.
    VAE: factor 8, 16 latent channels. Scheduler: flow-matching Euler, shift 3.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=96,
        caption_projection_dim=32,
        pooled_projection_dim=32 + 48,
        pos_embed_max_size=32,
        qk_norm=qk_norm,
    )
    vae = tiny_flow_vae(seed + 1, **SD3_VAE_FACTORS)
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, 32, layers=2, heads=4, intermediate=64, projection_dim=32)
    torch.manual_seed(seed + 3)
    text_encoder_2 = clip_text_encoder(
        tokenizer_2, 48, layers=2, heads=4, intermediate=96, hidden_act="gelu", projection_dim=48
    )
    torch.manual_seed(seed + 4)
    text_encoder_3 = t5_text_encoder(tokenizer_3, 96, layers=2, heads=4, head_dim=8, ff=128)
    for m in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        m.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "tokenizer_3": tokenizer_3,
        "scheduler": FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULE),
    }


def tiny_sd3_pipeline(tokenizer: Any, tokenizer_2: Any, tokenizer_3: Any, **kwargs: Any) -> Any:
    """A ``StableDiffusion3Pipeline`` around :func:`tiny_sd3_components`."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**tiny_sd3_components(tokenizer, tokenizer_2, tokenizer_3, **kwargs))


def tiny_flux_components(
    tokenizer: Any, tokenizer_2: Any, *, seed: int = 0, guidance_embeds: bool = False
) -> dict[str, Any]:
    """FLUX.1-shaped but tiny components, random weights.

    Text: a CLIP encoder of width 32 whose pooled output (the final-norm state at ``<|endoftext|>``, not
    projected) feeds ``pooled_projection_dim`` = 32, and a T5 encoder of width 64 whose states
    are ``encoder_hidden_states`` alone (``joint_attention_dim`` = 64). Transformer: 1 double- and
    1 single-stream block, 2 heads × 16 = 32 wide, RoPE axes (4, 6, 6) over (index, row, column),
    ``in_channels`` 64 = 16 latent channels packed 2 × 2; ``guidance_embeds=True`` makes it
    guidance-distilled like [dev] (the pipeline then passes ``guidance_scale`` as an input).
    VAE: factor 8, 16 latent channels, so images are multiples of 16 px. Scheduler: FLUX.1's
    dynamic shift (:data:`FLUX_SCHEDULE`).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=64,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    vae = tiny_flow_vae(seed + 1, **FLUX_VAE_FACTORS)
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, 32, layers=2, heads=4, intermediate=64)
    torch.manual_seed(seed + 3)
    text_encoder_2 = t5_text_encoder(tokenizer_2, 64, layers=2, heads=4, head_dim=8, ff=128)
    for m in (transformer, vae, text_encoder, text_encoder_2):
        m.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE),
    }


def tiny_flux_pipeline(tokenizer: Any, tokenizer_2: Any, **kwargs: Any) -> Any:
    """A ``FluxPipeline`` around :func:`tiny_flux_components`."""
    from diffusers import FluxPipeline

    return FluxPipeline(**tiny_flux_components(tokenizer, tokenizer_2, **kwargs))
