"""Speed and memory of leditspp against the diffusers LEDITS++ port, side by side in one run.

Both edit the same image on the same model (random weights: the compute is that of real ones)
with the same settings: invert + edit, N + N steps, SDE-DPM-Solver++(2M), skip 0.15, mask mode
``intersect``, with 1 and with 3 concepts. The port gets an exact scheduler (``sigma_min``).

Presets (``--preset``):
  cpu       SD-1.5-shaped UNet, VAE and CLIP text encoder at a fifth of the width (UNet 64/128/256/256),
            256², fp32, 20 + 20 steps — a few minutes on 2 cores; targets: time ≤ 0.6, memory ≤ 0.5 at E = 3
  gpu-sd15  the full SD 1.5 architecture, 512², fp16, 20 + 20 steps (CUDA)
  gpu-sdxl  the full SDXL base architecture, 1024², fp16, 20 + 20 steps (CUDA)
  smoke     the tests' tiny SD model, 64², 4 + 4 steps (checks this script; seconds)
  smoke-xl  the tests' tiny SDXL model, 64², 4 + 4 steps

Measured per job: wall time (CUDA synchronised), peak memory above the job's start — on CUDA
``max_memory_allocated``, on the CPU the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``, in a child process whose glibc unmaps every freed block ≥ 64 KiB, so
that one job's leftovers neither hide nor inflate the next one's peak; timings run with the
default allocator),
and UNet row-evaluations next to the floor N + N·(1 + E). A third case lets the 3 concepts wait
a quarter of the steps (warm-up): leditspp replays the stored inversion until then and goes
below that floor; the port evaluates every row at every step.

Run: ``.venv/bin/python benchmarks/speed.py --preset cpu`` (add ``--compile`` for the opt-in
torch.compile path; ``--repeats k`` keeps the fastest of k timed runs).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from leditspp import Edit, Editor
from leditspp.demo import SD_SCHEDULE
from leditspp.io import to_pil
from leditspp.testing import (
    clip_text_encoder,
    clip_tokenizer,
    diffusers_port,
    diffusers_port_xl,
    exact_port_scheduler,
    keep_attention_processors,
    port_edit_arguments,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

warnings.filterwarnings("ignore")

CONCEPTS = (Edit.parse("+sunglasses"), Edit.parse("-beard"), Edit.parse("+cherry blossoms:7"))
SKIP = 0.15


@dataclass(frozen=True)
class Preset:
    build: Callable[[], Any]  # → a diffusers SD or SDXL pipeline
    size: int
    steps: int
    dtype: torch.dtype
    device: str
    targets: dict[str, float]  # ratio targets at E = 3


# -- models --------------------------------------------------------------------------------------


def _clip(tokenizer: Any, width: int, layers: int, heads: int, **config: Any) -> Any:
    return clip_text_encoder(tokenizer, width, layers=layers, heads=heads, intermediate=4 * width, **config).eval()


def _vae(widths: tuple[int, ...], sample_size: int, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=widths,
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
        **extra,
    ).eval()


def sd15(size: int, unet: tuple[int, ...], vae: tuple[int, ...], text: int) -> Any:
    """The SD 1.5 architecture (UNet, VAE, CLIP ViT-L/14-shaped text encoder) at the given widths.

    Full size: ``unet=(320, 640, 1280, 1280)``, ``vae=(128, 256, 512, 512)``, ``text=768``.
    """
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = clip_tokenizer(tempfile.mkdtemp())
    torch.manual_seed(0)
    return StableDiffusionPipeline(
        unet=UNet2DConditionModel(
            sample_size=size // 8,
            block_out_channels=unet,
            layers_per_block=2,
            cross_attention_dim=text,
            attention_head_dim=8,
        ).eval(),
        vae=_vae(vae, size),
        text_encoder=_clip(tokenizer, text, 12, text // 64, hidden_act="quick_gelu"),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl(size: int) -> Any:
    """The SDXL base 1.0 architecture: UNet 320/640/1280 (1, 2, 10 transformer layers), CLIP
    ViT-L and OpenCLIP ViT-bigG text encoders, the SDXL VAE."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = clip_tokenizer(tempfile.mkdtemp())
    tokenizer_2 = clip_tokenizer(tempfile.mkdtemp(), pad_token="!")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=size // 8,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ).eval()
    vae = _vae((128, 256, 512, 512), size, scaling_factor=0.13025, force_upcast=True)
    text_encoder = _clip(tokenizer, 768, 12, 12, hidden_act="quick_gelu")
    text_encoder_2 = _clip(tokenizer_2, 1280, 32, 20, hidden_act="gelu", projection_dim=1280)
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading"),
        add_watermarker=False,
    )


def _tiny_sd() -> Any:
    return tiny_sd_pipeline(clip_tokenizer(tempfile.mkdtemp()))


def _tiny_sdxl() -> Any:
    return tiny_sdxl_pipeline(clip_tokenizer(tempfile.mkdtemp()), clip_tokenizer(tempfile.mkdtemp(), pad_token="!"))


PRESETS = {
    "cpu": Preset(
        lambda: sd15(256, (64, 128, 256, 256), (32, 64, 128, 128), 256),
        256,
        20,
        torch.float32,
        "cpu",
        {"time": 0.6, "memory": 0.5},
    ),
    "gpu-sd15": Preset(
        lambda: sd15(512, (320, 640, 1280, 1280), (128, 256, 512, 512), 768), 512, 20, torch.float16, "cuda", {}
    ),
    "gpu-sdxl": Preset(lambda: sdxl(1024), 1024, 20, torch.float16, "cuda", {}),
    "smoke": Preset(_tiny_sd, 64, 4, torch.float32, "cpu", {}),
    "smoke-xl": Preset(_tiny_sdxl, 64, 4, torch.float32, "cpu", {}),
}


# -- measuring ------------------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _release_host_memory() -> None:
    """Make freed memory leave the process, so that the next job's peak starts from its own floor."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Measure:
    seconds: float = 0.0
    peak_bytes: int | None = None  # the peak above the use at the start (activations, visiting weights)
    total_bytes: int | None = None  # the peak itself (with the resident weights): what a card must hold
    rows: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_start(device: torch.device) -> int | None:
    """Reset the peak-memory counter; return the current use it is measured from (None: unknown)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    _release_host_memory()
    base = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set (Linux ≥ 4.0)
    except OSError:
        return None
    return base


def _peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status("VmHWM")


@contextlib.contextmanager
def measure(device: torch.device, memory: bool = True) -> Iterator[Measure]:
    """Wall time and (``memory``) peak memory above the starting point of the ``with`` body."""
    m = Measure()
    _sync(device)
    base = _peak_start(device) if memory else None
    start = time.perf_counter()
    yield m
    _sync(device)
    m.seconds = time.perf_counter() - start
    if base is not None:
        m.total_bytes = _peak(device)
        m.peak_bytes = m.total_bytes - base


@contextlib.contextmanager
def count_rows(unet: Any, m: Measure, keyword: str = "sample") -> Iterator[None]:
    """Add the batch rows of every call of the network inside the block to ``m.rows`` (its first
    input, positional or by the name ``keyword``: a batched tensor, or a list of one tensor per
    row as Z-Image's transformer takes)."""

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else kwargs[keyword]
        m.rows += len(first) if isinstance(first, list) else first.shape[0]

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# -- the two implementations ----------------------------------------------------------------------


def ours(editor: Editor, image: Any, steps: int, edits: tuple[Edit, ...]) -> Any:
    inversion = editor.invert(image, steps=steps, skip=SKIP, seed=0)
    return editor.edit(inversion, list(edits), mask_mode="intersect").images


def theirs(port: Any, image: Any, steps: int, edits: tuple[Edit, ...]) -> Any:
    with keep_attention_processors(port.unet):  # the port leaves unfused processors behind
        vae_dtype = port.vae.dtype
        port.invert(image=image, num_inversion_steps=steps, skip=SKIP, generator=torch.Generator().manual_seed(0))
        # The SDXL port's invert upcasts a force_upcast VAE for its reconstruction and never casts
        # it back; its edit then feeds fp16 latents to the fp32 VAE and crashes. Undo it for it.
        port.vae.to(vae_dtype)
        return port(
            **port_edit_arguments(edits, steps),
            use_intersect_mask=True,
            output_type="pil",
        ).images


# -- the run --------------------------------------------------------------------------------------


Jobs = dict[str, Callable[[int, tuple[Edit, ...]], Any]]
IMPLEMENTATIONS = ("leditspp", "diffusers port")


def workloads(steps: int) -> dict[str, tuple[Edit, ...]]:
    """The edits of each case: 1 and 3 concepts active at every step, and 3 that wait a quarter
    of the steps (leditspp replays the inversion until then; the port evaluates every row)."""
    wait = steps // 4
    return {
        "1": CONCEPTS[:1],
        "3": CONCEPTS,
        f"3, warm-up {wait}": tuple(dataclasses.replace(e, warmup_steps=wait) for e in CONCEPTS),
    }


def cases(steps: int) -> list[tuple[str, str]]:
    return [(name, label) for label in workloads(steps) for name in IMPLEMENTATIONS]


def setup(preset: Preset) -> tuple[Editor, Jobs]:
    """The model, both implementations on it, the input image, and warm-up runs of each."""
    device = torch.device(preset.device)
    with device:  # random initialisation right on the device (minutes on the host for SDXL)
        pipe = preset.build()
    editor = Editor.from_pipe(pipe.to(device, preset.dtype))
    port = (diffusers_port_xl if editor.model.family == "sdxl" else diffusers_port)(
        editor.model, exact_port_scheduler()
    )
    image = torch.rand(3, preset.size, preset.size, generator=torch.Generator().manual_seed(0))
    image = to_pil(image[None] * 2 - 1)[0]
    jobs: Jobs = {
        "leditspp": lambda n, e: ours(editor, image, n, e),
        "diffusers port": lambda n, e: theirs(port, image, n, e),
    }
    # lazy initialisation and first calls of a shape are not what we measure: every job meets
    # its inversion chunk (full steps) and each concept count's rows once before the timings
    for job in jobs.values():
        job(preset.steps, CONCEPTS)
        job(2, CONCEPTS[:1])
    return editor, jobs


def run(name: str, preset: Preset, repeats: int, compile_unet: bool) -> list[dict[str, Any]]:
    """Time every case (``repeats`` runs each); then measure peak memory and UNet rows in one
    more run each — on the CPU in a child process whose glibc returns freed blocks at once, so
    that one job's leftovers neither hide nor inflate the next one's peak."""
    editor, jobs = setup(preset)
    work = workloads(preset.steps)
    seconds = {
        (n, w): _best_time(jobs[n], preset.steps, work[w], repeats, editor.device) for n, w in cases(preset.steps)
    }
    if editor.device.type == "cpu":
        usage = _usage_in_child(name, preset.steps)
    else:
        usage = {(n, w): _usage(jobs[n], preset.steps, work[w], editor) for n, w in cases(preset.steps)}
    rows = [{"name": n, "case": w, **usage[n, w], "seconds": seconds[n, w]} for n, w in cases(preset.steps)]
    if compile_unet:  # last: the port shares the UNet, and compiling it must not touch the port's numbers
        editor.compile()
        for label, edits in work.items():
            jobs["leditspp"](preset.steps, edits)  # the first call of each shape compiles
            best = _best_time(jobs["leditspp"], preset.steps, edits, repeats, editor.device)
            usage = {"peak": None, "rows": None}  # a row-counting hook would recompile the graphs
            if editor.device.type == "cuda":  # (on the CPU this process has no clean peak)
                with measure(editor.device) as m:
                    jobs["leditspp"](preset.steps, edits)
                usage["peak"] = m.peak_bytes
            rows.append({"name": "leditspp, compiled", "case": label, "seconds": best, **usage})
    for r in rows:
        r["concepts"] = len(work[r["case"]])
    return rows


def _best_time(job: Callable, steps: int, edits: tuple[Edit, ...], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        with measure(device, memory=False) as m:
            job(steps, edits)
        times.append(m.seconds)
    return min(times)


def _usage(job: Callable, steps: int, edits: tuple[Edit, ...], editor: Editor) -> dict[str, Any]:
    """Peak memory and UNet rows of one run of ``job``."""
    with measure(editor.device) as m, count_rows(editor.model.denoiser.unet, m):
        job(steps, edits)
    return {"peak": m.peak_bytes, "rows": m.rows}


def _usage_in_child(name: str, steps: int) -> dict[tuple[str, str], dict[str, Any]]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 16)}  # mmap (and unmap) every block ≥ 64 KiB
    out = subprocess.run(
        [sys.executable, __file__, "--preset", name, "--usage-only"], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"the memory run failed:\n{out.stderr[-3000:]}")
    usage = json.loads(out.stdout.strip().splitlines()[-1])
    return {(n, w): usage[f"{n}|{w}"] for n, w in cases(steps)}


def usage_only(preset: Preset) -> None:
    """The child's part: print the peak memory and UNet rows of every case as one JSON line."""
    editor, jobs = setup(preset)
    work = workloads(preset.steps)
    print(json.dumps({f"{n}|{w}": _usage(jobs[n], preset.steps, work[w], editor) for n, w in cases(preset.steps)}))


def report(preset_name: str, preset: Preset, rows: list[dict[str, Any]], repeats: int) -> str:
    n = preset.steps
    lines = [
        f"preset {preset_name}: {preset.size}², {str(preset.dtype).removeprefix('torch.')}, {n} + {n} steps, "
        f"skip {SKIP}, mask intersect; {datetime.date.today()}, {_machine(preset.device)}; "
        f"torch {torch.__version__}, diffusers {_version('diffusers')}; best of {repeats}",
        "",
        "| implementation | concepts E | time (s) | peak memory (MiB) | UNet rows | floor N + N·(1+E) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peak = "n/a" if r["peak"] is None else f"{r['peak'] / 2**20:.0f}"
        used = "–" if r["rows"] is None else str(r["rows"])
        floor = n + n * (1 + r["concepts"])
        lines.append(f"| {r['name']} | {r['case']} | {r['seconds']:.2f} | {peak} | {used} | {floor} |")
    lines += ["", "| concepts E | time ratio (ours / port) | memory ratio (ours / port) |", "| --- | --- | --- |"]
    for label in workloads(n):
        a, b = (next(r for r in rows if r["name"] == name and r["case"] == label) for name in IMPLEMENTATIONS)
        t = a["seconds"] / b["seconds"]
        mem = a["peak"] / b["peak"] if a["peak"] is not None and b["peak"] else float("nan")
        verdict = ""
        if label == "3" and preset.targets:
            ok_t, ok_m = t <= preset.targets["time"], mem <= preset.targets["memory"]
            memory_verdict = "not measured" if math.isnan(mem) else "met" if ok_m else "NOT met"
            verdict = f" (targets ≤ {preset.targets['time']} / ≤ {preset.targets['memory']}: "
            verdict += f"{'met' if ok_t else 'NOT met'} / {memory_verdict})"
        memory = "n/a" if math.isnan(mem) else f"{mem:.2f}"
        lines.append(f"| {label} | {t:.2f} | {memory}{verdict} |")
    return "\n".join(lines)


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def positive(text: str) -> int:
    """argparse type: a whole number ≥ 1 (``--repeats 0`` would time nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--repeats", type=positive, default=1, help="timed runs per job; the fastest counts")
    parser.add_argument("--compile", action="store_true", help="also time leditspp with torch.compile")
    parser.add_argument("--usage-only", action="store_true", help=argparse.SUPPRESS)  # the memory child
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    if preset.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"preset {args.preset} needs a CUDA GPU")
    with torch.no_grad():
        if args.usage_only:
            return usage_only(preset)
        rows = run(args.preset, preset, args.repeats, args.compile)
    print(report(args.preset, preset, rows, args.repeats))


if __name__ == "__main__":
    main()
