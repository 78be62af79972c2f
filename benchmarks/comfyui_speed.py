"""The ComfyUI pack's edit time over ComfyUI's own ``KSampler`` on the same model, size and steps.

One run times, on one ComfyUI ``MODEL``: the pack's ``LeditsInvert`` + ``LeditsEdit`` (N steps,
skip 0.15, E concepts, mask ``intersect``) and ``KSampler`` (N steps, dpmpp_2m, cfg 7: a
conditional and an unconditional row each step). It prints both times (the fastest of the
repeats), the model rows each evaluated (counted by a ``model_function_wrapper``, which both
honour) and the ratio beside its floor, N + N·(1 + E) rows against KSampler's N·2.

The model is a ComfyUI checkpoint (``--checkpoint``, loaded as ``CheckpointLoaderSimple`` loads
it), or by default an SD 1.x UNet of SD 1.5's widths at a reduced depth (the smallest one
ComfyUI's detection takes for SD 1.x; the tests' ``CHECKPOINT_UNET``) with CLIP-L and a small
VAE, random from fixed seeds. Run it with a Python that has ComfyUI's requirements::

    python benchmarks/comfyui_speed.py --size 256 --steps 20 --concepts 1 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def import_comfyui(root: Path, cpu: bool) -> None:
    """Put ComfyUI (at ``root``), the pack and the tests' tiny builders on ``sys.path``."""
    for path in (root, REPO / "comfyui", REPO / "tests" / "comfyui"):
        sys.path.insert(0, str(path))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu


def default_parts() -> tuple[Any, Any, Any]:
    """The default model: SD 1.5's widths at three levels, CLIP-L, a small VAE (random weights)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models
    import tiny
    from comfy.supported_models_base import ClipTarget

    model = comfy.supported_models.SD15(dict(tiny.CHECKPOINT_UNET)).get_model({})
    tiny.randomize(model.diffusion_model, 0)
    device = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))
    clip = comfy.sd.CLIP(ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel))
    tiny.randomize(clip.cond_stage_model, 1)
    return patcher, clip, tiny.tiny_vae()


def counting(model: Any, rows: list[int]) -> Any:
    """A clone of ``model`` whose calls add their batch rows to ``rows`` (chaining a wrapper it had)."""
    counted = model.clone()
    inner = model.model_options.get("model_function_wrapper")

    def wrapper(apply: Callable[..., Any], args: dict[str, Any]) -> Any:
        rows.append(args["input"].shape[0])
        if inner is not None:
            return inner(apply, args)
        return apply(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted


def best(run: Callable[[], None], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    comfyui = os.environ.get("LEDITSPP_COMFYUI", REPO.parent / "shared" / "comfyui")
    parser.add_argument("--comfyui", type=Path, default=Path(comfyui), help="a ComfyUI v0.3.64 checkout")
    parser.add_argument("--checkpoint", type=Path, help="a ComfyUI checkpoint (default: random SD 1.x weights)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=20, help="N")
    parser.add_argument("--concepts", type=int, default=1, help="E")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use its GPU (default: the CPU)")
    args = parser.parse_args()
    import_comfyui(args.comfyui, cpu=not args.gpu)
    import comfy.sd
    import nodes
    from leditspp_comfy.nodes import LeditsConcept, LeditsEdit, LeditsInvert

    if args.checkpoint:
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(args.checkpoint))[:3]
    else:
        model, clip, vae = default_parts()
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(3))
    concepts: tuple[Any, ...] = ()
    for i in range(args.concepts):
        concepts = LeditsConcept().concept(clip, f"a red hat {i}", "add", 5.0, 0.9, 0, 0, concepts=concepts)[0]
    positive = nodes.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": vae.encode(image)}
    rows: list[int] = []
    counted = counting(model, rows)  # one patcher for both: ComfyUI reloads weights between patchers

    def pack() -> None:
        rows.clear()
        options = {"steps": args.steps, "skip": 0.15, "seed": 0, "solver": "dpmsolver++", "source_guidance": 3.5}
        inversion = LeditsInvert().invert(counted, vae, clip, image, **options)[0]
        LeditsEdit().edit(counted, inversion, "intersect", -1, concepts=concepts)

    def ksampler() -> None:
        rows.clear()
        nodes.KSampler().sample(counted, 0, args.steps, 7.0, "dpmpp_2m", "normal", positive, negative, latent)

    ksampler()  # warm-up: weights loaded, kernels chosen
    pack_time, pack_rows = best(pack, args.repeats), sum(rows)
    ksampler_time, ksampler_rows = best(ksampler, args.repeats), sum(rows)
    n, e = args.steps, args.concepts
    print(
        f"{datetime.date.today()} · {platform.machine()}, {torch.get_num_threads()} threads · "
        f"torch {torch.__version__} · "
        f"{args.checkpoint or 'random SD 1.x (320 channels, 3 levels), CLIP-L'} · {args.size}², N = {n}, E = {e}, "
        f"fastest of {args.repeats}"
    )
    print("| run | time (s) | model rows |\n| --- | --- | --- |")
    print(f"| LEDITS++ invert + edit | {pack_time:.2f} | {pack_rows} |")
    print(f"| KSampler | {ksampler_time:.2f} | {ksampler_rows} |")
    floor = (n + n * (1 + e)) / (2 * n)
    print(f"time ratio {pack_time / ksampler_time:.2f}; row floor (N + N·(1+E)) / (N·2) = {floor:.2f}")


if __name__ == "__main__":
    main()
