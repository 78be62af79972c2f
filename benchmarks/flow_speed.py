"""Speed, memory and transformer rows of LEDITS++ on the flow transformers (SD3, FLUX.1, FLUX.2
[klein], Z-Image, Qwen-Image).

No other LEDITS++ implementation runs these models, so there is no reference to compare with:
the table gives leditspp's own time and peak memory for invert + edit (N + N steps,
SDE-DPM-Solver++(2M), skip 0.15 — 0 for the few-step checkpoints —, mask ``intersect``) with 1
and 3 concepts, and the transformer rows it evaluated next to the floor N + N·(1 + E) (one row per
step for the inversion, the base row and one per active concept per edit step). Random weights
at the published configs' shapes: the compute and the memory are those of the real checkpoints
(text encoders with their real vocabularies; Qwen2.5-VL's vision tower, which text prompts never
run, is a token one).

Presets (``--preset``):
  cpu-sd3    SD3-shaped at a reduced width (6 joint blocks, 6 × 64 heads; small text encoders),
             256², fp32, 10 + 10 steps (minutes on 2 cores)
  cpu-flux   FLUX-shaped at a reduced width (2 double + 4 single blocks, 4 × 64 heads), 256², fp32
  gpu-sd3    the SD3.5-medium transformer (24 blocks, 24 × 64), CLIP-L/G and T5-XXL, 1024², bf16
  gpu-flux   the FLUX.1-dev transformer (19 + 38 blocks, 24 × 128), CLIP-L and T5-XXL, 1024², bf16
  gpu-klein  FLUX.2 [klein] 4B, distilled (5 + 20 blocks, 24 × 128) and Qwen3-4B, 1024², bf16,
             4 + 4 steps, skip 0 (its recommended settings)
  gpu-zimage Z-Image-Turbo (S3-DiT, 30 + 2 + 2 layers, 3840 wide) and Qwen3-4B, 1024², bf16, 8 + 8
             steps, skip 0
  gpu-qwen   Qwen-Image (60 MMDiT blocks, 24 × 128; 20 B) and Qwen2.5-VL-7B, 1024², bf16, 50 + 50
             steps (≈ 10 minutes with --repeats 3 on an H100-class GPU: run it with --repeats 1)
  cpu-klein, cpu-zimage, cpu-qwen   the same builders at a reduced width, 256², fp32 (minutes)
  smoke-sd3  the tests' tiny SD3, 64², 4 + 4 steps (checks this script; seconds)
  smoke-flux the tests' tiny FLUX, 64², 4 + 4 steps
  smoke-klein, smoke-zimage, smoke-qwen   the tests' tiny pipelines (leditspp.testing.tiny2026), 64²,
             bf16 (the GPU presets' precision), 4 + 4 steps

Run: ``.venv/bin/python benchmarks/flow_speed.py --preset cpu-sd3`` (``--repeats k``: fastest of k).
``--offload none|model|group|auto`` measures under a memory plan (:mod:`leditspp.offload`; the
weights of an offloading plan are built in host RAM and visit the device), ``--compile`` with
``Editor.compile()`` (CUDA graphs on a GPU; transformer rows are not counted then: a counting hook
would recompile the graphs). Peak memory is given above the start of a run (activations and the
weights that visit) and in total (what the card must hold).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from speed import count_rows, measure, positive

from leditspp import Edit, Editor
from leditspp.offload import CHOICES
from leditspp.testing import (
    SD3_SCHEDULE,
    clip_text_encoder,
    clip_tokenizer,
    t5_text_encoder,
    t5_tokenizer,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
)
from leditspp.testing.tiny2026 import (
    KLEIN_SCHEDULE,
    QWENIMAGE_SCHEDULE,
    ZIMAGE_SCHEDULE,
    qwen3_text_encoder,
    qwen25vl_text_encoder,
    qwen_tokenizer,
    tiny_klein_pipeline,
    tiny_qwenimage_pipeline,
    tiny_zimage_pipeline,
)

SKIP = 0.15
CONCEPTS = (Edit("a red hat", scale=4.0), Edit("sunglasses", scale=4.0), Edit("a cat", scale=3.0, remove=True))


@dataclass(frozen=True)
class Preset:
    build: Callable[[], Any]
    size: int
    steps: int
    dtype: torch.dtype
    device: str
    skip: float = SKIP


def _tokenizers() -> tuple[Any, Any, Any]:
    return (
        clip_tokenizer(tempfile.mkdtemp()),
        clip_tokenizer(tempfile.mkdtemp(), pad_token="!"),
        t5_tokenizer(tempfile.mkdtemp()),
    )


def flow_vae(widths: tuple[int, ...], shift_factor: float, scaling_factor: float) -> Any:
    """A factor-8 VAE with 16 latent channels and no quant convolutions (SD3's and FLUX's shape)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=widths, layers_per_block=2, latent_channels=16, norm_num_groups=32,
        shift_factor=shift_factor, scaling_factor=scaling_factor, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()  # fmt: skip


def sd3(layers: int, heads: int, clip: tuple[int, int], t5: tuple[int, int, int], vae: tuple[int, ...]) -> Any:
    """An SD3 pipeline: ``layers`` joint blocks of ``heads`` × 64; CLIP widths ``clip``; T5 (width,
    layers, feed-forward); VAE widths ``vae``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok, tok2, tok3 = _tokenizers()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=layers,
        attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=t5[0],
        caption_projection_dim=heads * 64, pooled_projection_dim=sum(clip), pos_embed_max_size=192,
    )  # fmt: skip
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        vae=flow_vae(vae, shift_factor=0.0609, scaling_factor=1.5305),
        text_encoder=clip_text_encoder(
            tok, clip[0], layers=4, heads=8, intermediate=4 * clip[0], projection_dim=clip[0]
        ),
        text_encoder_2=clip_text_encoder(
            tok2, clip[1], layers=4, heads=8, intermediate=4 * clip[1], projection_dim=clip[1]
        ),
        text_encoder_3=t5_text_encoder(tok3, t5[0], layers=t5[1], heads=8, head_dim=t5[0] // 8, ff=t5[2]),
        tokenizer=tok,
        tokenizer_2=tok2,
        tokenizer_3=tok3,
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULE),
    )


def flux(double: int, single: int, heads: int, head_dim: int, t5: tuple[int, int, int], vae: tuple[int, ...]) -> Any:
    """A FLUX.1-dev pipeline (guidance-distilled): ``double`` + ``single`` blocks of ``heads`` × ``head_dim``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tok, _, tok3 = _tokenizers()
    torch.manual_seed(0)
    rope = (head_dim // 8, (head_dim - head_dim // 8) // 2, head_dim - head_dim // 8 - (head_dim - head_dim // 8) // 2)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=double, num_single_layers=single, attention_head_dim=head_dim,
        num_attention_heads=heads, joint_attention_dim=t5[0], pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=rope,
    )  # fmt: skip
    return FluxPipeline(
        transformer=transformer.eval(),
        vae=flow_vae(vae, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=clip_text_encoder(tok, 768, layers=12, heads=12, intermediate=3072),
        text_encoder_2=t5_text_encoder(tok3, t5[0], layers=t5[1], heads=8, head_dim=t5[0] // 8, ff=t5[2]),
        tokenizer=tok,
        tokenizer_2=tok3,
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
    )  # fmt: skip


def klein(double: int, single: int, heads: int, head_dim: int, text: dict[str, Any], vae: tuple[int, ...]) -> Any:
    """A distilled FLUX.2 [klein] pipeline: ``double`` + ``single`` blocks of ``heads`` × ``head_dim``
    reading three stacked Qwen3 layers (``joint_attention_dim`` 3 × the text width); Qwen3 of
    :func:`qwen3_text_encoder`'s ``text``; FLUX.2's VAE of widths ``vae`` (32 channels)."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )

    tokenizer = qwen_tokenizer("qwen3")
    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        num_layers=double, num_single_layers=single, num_attention_heads=heads, attention_head_dim=head_dim,
        joint_attention_dim=3 * text["hidden"], axes_dims_rope=(head_dim // 4,) * 4, guidance_embeds=False,
    )  # fmt: skip
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**KLEIN_SCHEDULE),
        vae=AutoencoderKLFlux2(block_out_channels=vae, norm_num_groups=min(32, vae[0])).eval(),
        text_encoder=qwen3_text_encoder(tokenizer, **text),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
        is_distilled=True,
    )


def zimage(width: int, layers: int, refiners: int, heads: int, text: dict[str, Any], vae: tuple[int, ...]) -> Any:
    """A Z-Image(-Turbo) pipeline: the single-stream S3-DiT of ``width`` with ``layers`` main and
    ``refiners`` noise- and context-refiner layers of ``heads`` heads; Qwen3 ``text``; FLUX.1's VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    tokenizer = qwen_tokenizer("qwen3")
    torch.manual_seed(0)
    head = width // heads
    transformer = ZImageTransformer2DModel(
        dim=width, n_layers=layers, n_refiner_layers=refiners, n_heads=heads, n_kv_heads=heads,
        cap_feat_dim=text["hidden"], axes_dims=[head // 4, 3 * head // 8, 3 * head // 8],
    )  # fmt: skip
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**ZIMAGE_SCHEDULE),
        vae=flow_vae(vae, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=qwen3_text_encoder(tokenizer, **text),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )


def qwenimage(layers: int, heads: int, head_dim: int, text: dict[str, Any], vae_width: int) -> Any:
    """A Qwen-Image pipeline: ``layers`` MMDiT blocks of ``heads`` × ``head_dim``; Qwen2.5-VL ``text``
    (:func:`qwen25vl_text_encoder`); Qwen-Image's VAE of base width ``vae_width``."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    tokenizer = qwen_tokenizer("qwen2.5-vl")
    torch.manual_seed(0)
    rope = (head_dim // 8, 7 * head_dim // 16, 7 * head_dim // 16)
    transformer = QwenImageTransformer2DModel(
        num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim,
        joint_attention_dim=text["hidden"], axes_dims_rope=rope,
    )  # fmt: skip
    return QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULE),
        vae=AutoencoderKLQwenImage(base_dim=vae_width).eval(),
        text_encoder=qwen25vl_text_encoder(tokenizer, **text),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build in ``dtype``: a 20 B transformer initialised in fp32 would need 80 GB before its cast."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


T5_XXL = (4096, 24, 10240)
FULL_VAE = (128, 256, 512, 512)
SMALL_VAE = (32, 64, 128, 128)
#: Qwen3-4B (klein 4B's and Z-Image's text encoder) and Qwen2.5-VL-7B's language model (Qwen-Image's).
QWEN3_4B = {"hidden": 2560, "layers": 36, "heads": 32, "kv_heads": 8, "head_dim": 128, "intermediate": 9728}
QWEN25VL_7B = {"hidden": 3584, "layers": 28, "heads": 28, "kv_heads": 4, "intermediate": 18944}
QWEN3_SMALL = {"hidden": 256, "layers": 28, "heads": 4, "kv_heads": 2, "head_dim": 64, "intermediate": 512}
QWEN25VL_SMALL = {"hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 512}
PRESETS = {
    "cpu-sd3": Preset(lambda: sd3(6, 6, (128, 192), (320, 2, 640), (32, 64, 128, 128)), 256, 10, torch.float32, "cpu"),
    "cpu-flux": Preset(lambda: flux(2, 4, 4, 64, (256, 2, 512), (32, 64, 128, 128)), 256, 10, torch.float32, "cpu"),
    "gpu-sd3": Preset(lambda: sd3(24, 24, (768, 1280), T5_XXL, FULL_VAE), 1024, 28, torch.bfloat16, "cuda"),
    "gpu-flux": Preset(lambda: flux(19, 38, 24, 128, T5_XXL, FULL_VAE), 1024, 28, torch.bfloat16, "cuda"),
    "gpu-klein": Preset(
        lambda: klein(5, 20, 24, 128, {**QWEN3_4B, "vocab": 151936}, FULL_VAE), 1024, 4, torch.bfloat16, "cuda", 0.0
    ),
    "gpu-zimage": Preset(
        lambda: zimage(3840, 30, 2, 30, {**QWEN3_4B, "vocab": 151936}, FULL_VAE), 1024, 8, torch.bfloat16, "cuda", 0.0
    ),
    "gpu-qwen": Preset(
        lambda: qwenimage(60, 24, 128, {**QWEN25VL_7B, "mrope_section": (16, 24, 24), "vocab": 152064}, 96),
        1024,
        50,
        torch.bfloat16,
        "cuda",
    ),
    "cpu-klein": Preset(lambda: klein(1, 2, 4, 64, QWEN3_SMALL, SMALL_VAE), 256, 4, torch.float32, "cpu", 0.0),
    "cpu-zimage": Preset(lambda: zimage(256, 2, 1, 4, QWEN3_SMALL, SMALL_VAE), 256, 8, torch.float32, "cpu", 0.0),
    "cpu-qwen": Preset(
        lambda: qwenimage(2, 4, 64, {**QWEN25VL_SMALL, "mrope_section": (8, 12, 12)}, 32), 256, 10, torch.float32, "cpu"
    ),
    "smoke-sd3": Preset(lambda: tiny_sd3_pipeline(*_tokenizers()), 64, 4, torch.float32, "cpu"),
    "smoke-flux": Preset(
        lambda: tiny_flux_pipeline(*_tokenizers()[::2], guidance_embeds=True), 64, 4, torch.float32, "cpu"
    ),
    "smoke-klein": Preset(tiny_klein_pipeline, 64, 4, torch.bfloat16, "cpu", 0.0),
    "smoke-zimage": Preset(tiny_zimage_pipeline, 64, 4, torch.bfloat16, "cpu", 0.0),
    "smoke-qwen": Preset(tiny_qwenimage_pipeline, 64, 4, torch.bfloat16, "cpu"),
}


def run(preset: Preset, repeats: int, offload: str = "none", compiled: bool = False) -> list[dict[str, Any]]:
    device = torch.device(preset.device)
    home = device if offload == "none" else torch.device("cpu")  # an offloading plan's weights wait in RAM
    with home, default_dtype(preset.dtype):
        pipe = preset.build()
    editor = Editor.from_pipe(pipe.to(home, preset.dtype), offload=offload, device=device)
    image = torch.rand(3, preset.size, preset.size, generator=torch.Generator().manual_seed(0))

    def job(edits: tuple[Edit, ...]) -> None:
        inversion = editor.invert(image, steps=preset.steps, skip=preset.skip, seed=0)
        editor.edit(inversion, list(edits), mask_mode="intersect")

    if compiled:
        editor.compile()
    for edits in (CONCEPTS[:1], CONCEPTS):  # lazy initialisation (and compiling each shape) is not measured
        job(edits)
    rows = []
    for edits in (CONCEPTS[:1], CONCEPTS):
        times = []
        for _ in range(repeats):
            with measure(device, memory=False) as m:
                job(edits)
            times.append(m.seconds)
        with measure(device) as m, _counted(editor, m, compiled):
            job(edits)
        rows.append(
            {
                "concepts": len(edits),
                "seconds": min(times),
                "peak": m.peak_bytes,
                "total": m.total_bytes,
                "rows": None if compiled else m.rows,
            }
        )
    return rows


def _counted(editor: Editor, m: Any, compiled: bool) -> contextlib.AbstractContextManager:
    """Count the transformer's rows into ``m`` (not when compiled: the hook would recompile)."""
    return contextlib.nullcontext() if compiled else count_rows(editor.model.denoiser.transformer, m, "hidden_states")


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def report(name: str, preset: Preset, rows: list[dict[str, Any]], repeats: int, offload: str, compiled: bool) -> str:
    n = preset.steps
    machine = torch.cuda.get_device_name() if preset.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"preset {name}: {preset.size}², {str(preset.dtype).removeprefix('torch.')}, {n} + {n} steps, "
        f"skip {preset.skip}, mask intersect, offload {offload}{', compiled' if compiled else ''}; "
        f"{datetime.date.today()}, {machine}; torch {torch.__version__}; best of {repeats}",
        "",
        "| concepts E | time (s) | peak above start (MiB) | peak total (MiB) | transformer rows | floor N + N·(1+E) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        used = "–" if r["rows"] is None else str(r["rows"])
        floor = n + n * (1 + r["concepts"])
        lines.append(
            f"| {r['concepts']} | {r['seconds']:.2f} | {_mib(r['peak'])} | {_mib(r['total'])} | {used} | {floor} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-sd3")
    parser.add_argument("--repeats", type=positive, default=1, help="timed runs per case; the fastest counts")
    parser.add_argument("--offload", choices=CHOICES, default="none", help="the memory plan (leditspp.offload)")
    parser.add_argument("--compile", action="store_true", help="Editor.compile(): CUDA graphs on a GPU")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"preset {args.preset} needs a CUDA GPU")
    with torch.no_grad():
        rows = run(preset, args.repeats, args.offload, args.compile)
    print(report(args.preset, preset, rows, args.repeats, args.offload, args.compile))


if __name__ == "__main__":
    main()
