"""Memory plans (issue 25): the plan ``auto`` picks for given numbers, the same latents under every
plan on every family base, the execution device under offload hooks and refusals that name the fix."""

from __future__ import annotations

import pytest
import torch

from leditspp import Edit, Editor, offload
from leditspp.errors import LeditsError
from leditspp.models.base import runs_on
from leditspp.offload import ComponentBytes, MemoryPlan, choose_offload
from leditspp.testing import tiny_flux_pipeline, tiny_sd_pipeline
from leditspp.testing.tiny2026 import tiny_klein_pipeline

from .conftest import scene

GB = 2**30
FLUX_DEV = ComponentBytes(denoiser=int(23.8 * GB), text_encoders=(GB // 4, int(9.5 * GB)), rest=GB // 6)


# -- which plan auto picks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free_gb", "device_type", "expected"),
    [
        (80, "cuda", "none"),  # budget 0.8 · 80 = 64 GB: all 32 GB fit
        (40, "cuda", "none"),  # 32 ≤ 32
        (39, "cuda", "model"),  # 31.2: the denoiser, the larger encoder and the VAE (31 GB)
        (30, "cuda", "group"),  # 24: only the VAE stays (1 GB)
        (1, "cuda", "group"),  # nothing fits: the plan that needs least
        (1, "cpu", "none"),  # on the CPU the weights are already where it runs
    ],
)
def test_auto_picks_the_lightest_plan_that_fits(free_gb, device_type, expected):
    sizes = ComponentBytes(denoiser=20 * GB, text_encoders=(GB, 10 * GB), rest=GB)
    assert (sizes.resident("none"), sizes.resident("model"), sizes.resident("group")) == (32 * GB, 31 * GB, GB)
    assert choose_offload(free_gb * GB, sizes, device_type) == expected


def test_flux_dev_weights_pick_group_on_a_24_gb_card():
    assert choose_offload(80 * GB, FLUX_DEV, "cuda") == "none"  # 33.7 GB of weights
    assert choose_offload(42 * GB, FLUX_DEV, "cuda") == "model"  # 33.5 GB with T5 visiting, CLIP away
    assert choose_offload(24 * GB, FLUX_DEV, "cuda") == "group"


def test_auto_reads_the_components_and_the_free_memory(tokenizer, monkeypatch):
    pipe = tiny_sd_pipeline(tokenizer)
    sizes = offload.component_bytes(pipe.components)
    unet = sum(p.numel() * 4 for p in pipe.unet.parameters()) + sum(b.numel() * 4 for b in pipe.unet.buffers())
    assert sizes.denoiser == unet and len(sizes.text_encoders) == 1
    assert offload.component_bytes(pipe.components, fp8=True).denoiser == unet // 4  # one byte a weight
    meta = torch.device("meta")  # not the CPU, and nothing of the pipeline is there
    for free, expected in ((10 * sizes.resident("none"), "none"), (sizes.rest, "group")):
        monkeypatch.setattr(offload, "free_bytes", lambda device, free=free: free)
        assert offload.resolve(MemoryPlan(), pipe.components, meta) == MemoryPlan(expected)
    assert offload.resolve(MemoryPlan(), pipe.components, torch.device("cpu")).offload == "none"


# -- refusals ---------------------------------------------------------------------------------------


def test_an_unknown_plan_is_refused_naming_the_choices(sd_folder):
    with pytest.raises(LeditsError, match="offload must be one of 'auto', 'none', 'model', 'group'; got 'fast'"):
        Editor.from_pretrained(str(sd_folder), device="cpu", offload="fast")
    with pytest.raises(LeditsError, match="got 'Model'"):
        MemoryPlan("Model")


def test_a_plan_over_existing_offload_hooks_is_refused(tokenizer):
    pipe = tiny_sd_pipeline(tokenizer)
    first = Editor.from_pipe(pipe, offload="model")
    assert first.plan == MemoryPlan("model")
    with pytest.raises(LeditsError, match=r"text_encoder already carry offload hooks .*offload='none'"):
        Editor.from_pipe(pipe, offload="group")
    kept = Editor.from_pipe(pipe)  # auto keeps them as they are
    assert kept.plan.offload == "none" and hasattr(pipe.text_encoder, "_hf_hook")


# -- the same latents under every plan --------------------------------------------------------------


def _pipelines(tokenizer, tokenizer_t5):
    return {
        "sd": lambda: tiny_sd_pipeline(tokenizer, seed=0),
        "flux": lambda: tiny_flux_pipeline(tokenizer, tokenizer_t5, seed=0),
        "klein": lambda: tiny_klein_pipeline(seed=0),
    }


@pytest.mark.parametrize("family", ["sd", "flux", "klein"])
def test_every_plan_gives_the_same_latents(tokenizer, tokenizer_t5, family):
    build = _pipelines(tokenizer, tokenizer_t5)[family]
    image, edits = scene(seed=11), ["+a hat", "-a cat"]
    reference = Editor.from_pipe(build(), offload="none")
    inversion = reference.invert(image, steps=4, seed=0, source_prompt="a photo")
    expected = reference.edit(inversion, edits, decode=False).latents
    for name in ("model", "group"):
        editor = Editor.from_pipe(build(), offload=name)
        assert editor.plan == MemoryPlan(name)
        hooked = {k for k, v in editor.model.components().items() if offload.moves_weights(v)}
        encoders = {k for k in editor.model.components() if k.startswith("text_encoder")}
        assert hooked == (encoders if name == "model" else encoders | {"unet" if family == "sd" else "transformer"})
        assert editor.fingerprint == reference.fingerprint  # inversions travel between plans
        assert editor.device == torch.device("cpu")
        again = editor.invert(image, steps=4, seed=0, source_prompt="a photo")
        assert torch.equal(again.noise_maps, inversion.noise_maps)
        assert torch.equal(editor.edit(inversion, edits, decode=False).latents, expected)
        assert torch.equal(editor.edit(again, decode=False).latents, again.source_latents)  # exact reconstruction


def test_fp8_weights_store_one_byte_and_still_reconstruct_exactly(tokenizer):
    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer, seed=0), offload=MemoryPlan("none", fp8=True))
    unet = editor.model.denoiser.unet
    assert {p.dtype for p in unet.parameters()} >= {torch.float8_e4m3fn}
    assert editor.model.dtype == torch.float32  # each layer computes in the model's dtype
    plain = Editor.from_pipe(tiny_sd_pipeline(tokenizer, seed=0), offload="none")
    assert editor.fingerprint != plain.fingerprint  # other weights: an inversion of one does not fit the other
    inversion = editor.invert(scene(seed=12), steps=4, seed=0)
    assert torch.equal(editor.edit(inversion, decode=False).latents, inversion.source_latents)
    assert torch.isfinite(editor.edit(inversion, "+a hat", decode=False).latents).all()


def test_fp8_klein_edits_with_the_attention_mask():
    """FLUX.2 [klein]'s weights stored in fp8 (each layer upcast to compute): the attention mask is
    read from the attention kernel's inputs, never from a stored weight, so a masked edit runs."""
    editor = Editor.from_pipe(tiny_klein_pipeline(seed=0), offload=MemoryPlan("none", fp8=True))
    assert torch.float8_e4m3fn in {p.dtype for p in editor.model.denoiser.transformer.parameters()}
    inversion = editor.invert(scene(seed=12), steps=3, skip=0.0, seed=0)
    out = editor.edit(inversion, Edit("red circle", scale=6.0, threshold=0.7), mask_mode="attention", decode=False)
    assert torch.isfinite(out.latents).all() and 0 < float(out.mask_means.mean()) < 1


def test_vae_tiling_and_slicing_are_switched_on_where_asked(tokenizer):
    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer), offload=MemoryPlan("none", vae_tiling=True))
    assert editor.model.autoencoder.vae.use_tiling and not editor.model.autoencoder.vae.use_slicing
    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer), offload=MemoryPlan("none", vae_slicing=True))
    assert editor.model.autoencoder.vae.use_slicing and not editor.model.autoencoder.vae.use_tiling


# -- where things run -------------------------------------------------------------------------------


def test_the_execution_device_is_where_the_offload_hooks_bring_a_module():
    from accelerate import cpu_offload_with_hook
    from diffusers.hooks import apply_group_offloading

    grouped, hooked, plain = (torch.nn.Sequential(torch.nn.Linear(2, 2)) for _ in range(3))
    cuda = torch.device("cuda")  # named, never used: nothing runs
    apply_group_offloading(grouped, onload_device=cuda, offload_type="leaf_level")
    cpu_offload_with_hook(hooked, cuda)
    assert runs_on(grouped) == runs_on(hooked) == cuda  # their parameters wait on the CPU
    assert next(grouped.parameters()).device == torch.device("cpu")
    assert runs_on(plain) == torch.device("cpu")


def test_text_encoders_leave_the_device_after_each_encoding(tokenizer, monkeypatch):
    from accelerate.hooks import CpuOffload

    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer), offload="model")
    left: list[type] = []
    back_to_cpu = CpuOffload.init_hook
    monkeypatch.setattr(
        CpuOffload, "init_hook", lambda hook, module: left.append(type(module)) or back_to_cpu(hook, module)
    )
    inversion = editor.invert(scene(seed=13), steps=3, seed=0)
    assert left == [type(editor.model.text.text_encoder)]
    editor.edit(inversion, "+a hat", decode=False)
    assert len(left) == 2 and next(editor.model.text.text_encoder.parameters()).device == torch.device("cpu")
    with pytest.raises(LeditsError), offload.encoders_leave(editor.model.components()):
        raise LeditsError("an error while encoding")
    assert len(left) == 3  # errors included


def test_the_command_line_takes_a_plan(sd_folder, tmp_path):
    """``--offload`` on edit (and invert, eval, serve: the model options): the plan travels to the
    editor's loading; an unknown one is refused by the parser (exit 2)."""
    from leditspp.cli import main

    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    scene().save(photo)
    args = ["edit", str(photo), "-e", "+a red hat", "--model", str(sd_folder), "--device", "cpu", "--steps", "3"]
    assert main([*args, "--offload", "model", "-o", str(out), "--quiet"]) == 0 and out.is_file()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--offload", "fast", "-o", str(out)])
    assert exit_info.value.code == 2


# -- the free memory the plans are chosen by --------------------------------------------------------


def test_free_bytes_on_the_host_is_memavailable_in_bytes():
    """``/proc/meminfo`` gives ``MemAvailable`` in KiB (its unit column says kB): the host's free
    bytes are 1024 times that number, up to what other processes took or freed in between."""
    from pathlib import Path

    from leditspp.memory import free_bytes

    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo on this system")
    fields = next(line.split() for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable:"))
    assert fields[2] == "kB"
    available = int(fields[1]) * 1024
    assert abs(free_bytes(torch.device("cpu")) - available) <= 0.1 * available
