"""Reconstruction error of the diffusers LEDITS++ port vs leditspp on one tiny random SD model.

Run: ``.venv/bin/python benchmarks/reconstruction.py`` (CPU, offline, about a minute).
Prints max |reconstruction − encoded input| in latent space, fp32, for each configuration.
"""

from __future__ import annotations

import tempfile
import warnings

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from leditspp import Edit, Editor
from leditspp.demo import SD_SCHEDULE
from leditspp.io import to_pil
from leditspp.testing import clip_tokenizer, diffusers_port, keep_attention_processors, tiny_sd_pipeline

warnings.filterwarnings("ignore")


def port_error(editor, scheduler, image, steps, skip, source_prompt=""):
    with keep_attention_processors(editor.model.denoiser.unet):
        port = diffusers_port(editor.model, scheduler)
        try:
            x0 = port.encode_image(image)[0]
            port.invert(
                image=image,
                num_inversion_steps=steps,
                skip=skip,
                source_prompt=source_prompt,
                generator=torch.Generator().manual_seed(0),
            )
            out = port(editing_prompt=None, output_type="latent").images
            return f"{(out - x0).abs().max().item():.1e}"
        except Exception as exc:  # the port's known crashes are part of the comparison
            return f"crash: {type(exc).__name__}"


def main() -> None:
    pipe = tiny_sd_pipeline(clip_tokenizer(tempfile.mkdtemp()))
    editor = Editor.from_pipe(pipe)
    image = to_pil(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)[0]
    dpm = dict(algorithm_type="sde-dpmsolver++", solver_order=2)
    rows = [
        ("DPM default (final sigma 0)", 30, 0.15, "", DPMSolverMultistepScheduler(**SD_SCHEDULE, **dpm), "dpmsolver++"),
        ("DPM default (final sigma 0)", 10, 0.20, "", DPMSolverMultistepScheduler(**SD_SCHEDULE, **dpm), "dpmsolver++"),
        (
            "DPM sigma_min, M = 12 < 15",
            10,
            0.20,
            "",
            DPMSolverMultistepScheduler(**SD_SCHEDULE, **dpm, final_sigmas_type="sigma_min"),
            "dpmsolver++",
        ),
        (
            "DPM sigma_min + source prompt",
            30,
            0.15,
            "a photo of a cat",
            DPMSolverMultistepScheduler(**SD_SCHEDULE, **dpm, final_sigmas_type="sigma_min"),
            "dpmsolver++",
        ),
        ("DDIM (stock)", 30, 0.15, "", DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False), "ddpm"),
    ]
    print("| configuration | N, skip | diffusers port | leditspp | leditspp, replayed |")
    print("| --- | --- | --- | --- | --- |")
    for name, steps, skip, source, scheduler, solver in rows:
        theirs = port_error(editor, scheduler, image, steps, skip, source)
        inv = editor.invert(image, steps=steps, skip=skip, solver=solver, seed=0, source_prompt=source)
        ours = (editor.edit(inv, decode=False).latents - inv.source_latents).abs().max().item()
        replay = editor.edit(inv, [Edit("x", scale=0.0)], mask_mode="none", decode=False).latents
        replayed = (replay - inv.source_latents).abs().max().item()
        print(f"| {name} | {steps}, {skip} | {theirs} | {ours:.1e} | {replayed:.1e} |")


if __name__ == "__main__":
    main()
