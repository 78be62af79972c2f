"""Issue 5's levers, checked for what they do (never for how fast): chunked inversion by memory,
edit steps split by memory (issue 25),
UNet rows at the floor, no per-step host syncs, a compile path that does not recompile per step,
and the speed benchmark itself (its smoke presets)."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from leditspp import Edit, Editor, defaults, memory
from leditspp.compiling import compile_options
from leditspp.errors import LeditsError
from leditspp.testing import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from leditspp.testing.tiny2026 import tiny_klein_pipeline

from .conftest import scene

ROOT = Path(__file__).resolve().parents[1]


# -- how many inversion steps per call ------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "rows", "row_bytes", "budget", "cap", "expected"),
    [
        (20, 1, 100, 10_000, None, 20),  # everything fits: one call
        (20, 1, 100, 850, None, 7),  # 8 fit → 3 calls of 7, 7, 6
        (20, 2, 100, 850, None, 4),  # 2 rows per step: 4 steps fit → 5 calls of 4
        (20, 1, 100, 10_000, 8, 7),  # the CPU cap of 8 rows
        (20, 2, 100, 10_000, 8, 4),
        (20, 1, 100, 10, None, 1),  # nothing fits: still one step per call
        (3, 4, 100, 10_000, 8, 2),  # cap 8 rows = 2 steps of 4 rows
    ],
)
def test_steps_per_call_fits_the_budget_and_evens_out_the_calls(steps, rows, row_bytes, budget, cap, expected):
    assert memory.steps_per_call(steps, rows, row_bytes, budget, cap) == expected


def test_row_bytes_scale_with_the_grid_the_width_and_the_dtype(editor):
    model = editor.model
    one = model.row_bytes(8, 8)
    assert one == defaults.ACTIVATION_ELEMENTS * 64 * model.denoiser.unet.config.block_out_channels[0] * 4
    assert model.row_bytes(16, 8) == 2 * one


@contextlib.contextmanager
def unet_calls(unet):
    """The batch rows of every UNet call made inside the block."""
    calls: list[int] = []
    handle = unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        handle.remove()


def test_inversion_chunks_follow_free_memory_and_stay_exact(editor, monkeypatch):
    image = scene(seed=3)
    with unet_calls(editor.model.denoiser.unet) as calls:
        roomy = editor.invert(image, steps=10, seed=0)
    assert calls == [5, 5]  # on the CPU at most 8 rows per call, evened out
    monkeypatch.setattr(memory, "free_bytes", lambda device: editor.model.row_bytes(8, 8) * 5)
    with unet_calls(editor.model.denoiser.unet) as calls:
        tight = editor.invert(image, steps=10, seed=0)
    assert calls == [2] * 5  # half of the 5 rows' worth of free memory: 2 steps per call
    assert torch.allclose(tight.noise_maps, roomy.noise_maps, atol=1e-4)
    assert torch.equal(editor.edit(tight, decode=False).latents, tight.source_latents)
    with unet_calls(editor.model.denoiser.unet) as calls:
        editor.invert(image, steps=10, seed=0, inversion_batch=10)
    assert calls == [10]  # the override wins


# -- UNet rows --------------------------------------------------------------------------------------


def test_unet_rows_are_the_floor_and_inactive_concepts_cost_nothing(editor):
    image, n = scene(seed=4), 8
    with unet_calls(editor.model.denoiser.unet) as calls:
        inversion = editor.invert(image, steps=n, seed=0)
    assert sum(calls) == n  # N: one row per step
    edits = ["+a hat", "-a cat", "+a tree"]
    with unet_calls(editor.model.denoiser.unet) as calls:
        editor.edit(inversion, edits, decode=False)
    assert calls == [1 + 3] * n  # N·(1 + E)
    late = [Edit("a hat", warmup_steps=3), Edit("a cat", warmup_steps=5, cooldown_steps=7)]
    with unet_calls(editor.model.denoiser.unet) as calls:
        editor.edit(inversion, late, decode=False)
    assert calls == [2, 2, 3, 3, 2]  # steps 0–2 replay the inversion; each step has its active rows


# -- an edit step's rows in chunks by memory -------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "row_bytes", "budget", "expected"),
    [(1, 100, 10_000, 100), (2, 100, 850, 4), (4, 100, 100, 1), (1, 0, 10, 10)],
)
def test_groups_per_call_fit_the_budget(batch, row_bytes, budget, expected):
    assert memory.groups_per_call(batch, row_bytes, budget) == expected


@pytest.mark.parametrize(("total", "fit", "expected"), [(5, 2, 2), (5, 3, 3), (4, 4, 4), (9, 8, 5), (3, 0, 1)])
def test_even_chunk_splits_into_the_fewest_even_calls(total, fit, expected):
    assert memory.even_chunk(total, fit) == expected


@pytest.mark.parametrize(("fit", "calls"), [(2, [4, 4, 2]), (3, [6, 4])])
def test_an_edit_step_splits_into_calls_that_fit_and_agrees(editor, monkeypatch, fit, calls):
    """Two images, a source prompt and three concepts: 5 groups of 2 rows, split at group bounds."""
    inversion = editor.invert([scene(seed=14), scene(seed=15)], steps=3, seed=0, source_prompt="a photo")
    edits = ["+a hat", Edit("a cat", remove=True), "+a tree"]
    with unet_calls(editor.model.denoiser.unet) as seen:
        whole = editor.edit(inversion, edits, decode=False)
    assert seen == [10] * 3  # everything fits: one call a step
    row = editor.model.row_bytes(8, 8)
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(fit * 2 * row / defaults.CALL_MEMORY_FRACTION))
    with unet_calls(editor.model.denoiser.unet) as seen:
        split = editor.edit(inversion, edits, decode=False)
    assert seen == calls * 3
    scale = whole.latents.abs().max()
    assert torch.allclose(split.latents, whole.latents, atol=1e-4 * scale)
    assert torch.allclose(split.mask_means, whole.mask_means, atol=1e-4)
    assert torch.equal(editor.edit(inversion, decode=False).latents, inversion.source_latents)


# -- CUDA graphs: a replay overwrites the last call's outputs -------------------------------------


@contextlib.contextmanager
def static_outputs(network):
    """What a CUDA-graphed network does to its outputs, on the CPU: every call of one output shape
    returns the same tensors, overwritten (a graph's static buffers; ``Editor.compile`` on a GPU)."""
    buffers: dict[tuple, list[torch.Tensor]] = {}

    def hook(module, args, output):
        leaves, spec = torch.utils._pytree.tree_flatten(output)
        key = tuple(tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor))
        kept = buffers.setdefault(key, [t.clone() for t in leaves if isinstance(t, torch.Tensor)])
        fresh = iter(kept)
        out = [next(fresh).copy_(t) if isinstance(t, torch.Tensor) else t for t in leaves]
        return torch.utils._pytree.tree_unflatten(out, spec)

    handle = network.register_forward_hook(hook)
    try:
        yield buffers
    finally:
        handle.remove()


@pytest.mark.parametrize("family", ["sd", "klein"])
def test_loops_take_each_call_before_the_next_overwrites_it(tokenizer, family, monkeypatch):
    """Split edit steps and chunked inversions read every call's estimates before the next call
    (a replayed CUDA graph reuses its output buffers): the same results as fresh outputs."""
    pipe = tiny_sd_pipeline(tokenizer) if family == "sd" else tiny_klein_pipeline(seed=0)
    editor = Editor.from_pipe(pipe)
    network = editor.model.denoiser.unet if family == "sd" else editor.model.denoiser.transformer
    images = [scene(seed=14), scene(seed=15)]
    edits = ["+a hat", Edit("a cat", remove=True), "+a tree"]
    inversion = editor.invert(images, steps=4, seed=0, inversion_batch=2)
    row = editor.model.row_bytes(*inversion.source_latents.shape[-2:])
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(2 * 2 * row / defaults.CALL_MEMORY_FRACTION))
    fresh = editor.edit(inversion, edits, decode=False)  # 4 groups of 2 rows: calls of 2 groups
    with static_outputs(network) as buffers:
        graphed = editor.edit(inversion, edits, decode=False)
        again = editor.invert(images, steps=4, seed=0, inversion_batch=2)
    assert buffers  # the network's outputs did come from the static buffers
    assert torch.allclose(graphed.latents, fresh.latents, atol=1e-5 * fresh.latents.abs().max())
    assert torch.allclose(graphed.mask_means, fresh.mask_means, atol=1e-5)
    assert torch.allclose(again.noise_maps, inversion.noise_maps, atol=1e-5 * inversion.noise_maps.abs().max())


# -- no per-step host syncs -------------------------------------------------------------------------


class HostTraffic(TorchDispatchMode):
    """Counts reads of device values by the host and host-to-device copies (device = meta)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        name = func.__name__
        if name.startswith("_local_scalar_dense") and tensors[0].device.type == "meta":
            self.counts["read"] += 1
        if name.startswith(("_to_copy", "copy_")):
            target = kwargs.get("device")
            to_meta = (target is not None and torch.device(target).type == "meta") or any(
                t.device.type == "meta" for t in tensors
            )
            if to_meta and any(t.device.type == "cpu" for t in tensors):
                self.counts["to device"] += 1
        return func(*args, **kwargs)


def _pipeline(family, tokenizer, tokenizer_2, tokenizer_t5):
    return {
        "sd": lambda: tiny_sd_pipeline(tokenizer),
        "sdxl": lambda: tiny_sdxl_pipeline(tokenizer, tokenizer_2),
        "sd3": lambda: tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5),
        "flux": lambda: tiny_flux_pipeline(tokenizer, tokenizer_t5),
        "klein": lambda: tiny_klein_pipeline(seed=0),
    }[family]()


def _to_meta(editor):
    """The denoising network onto the meta device: every value of the loops is unreadable (the
    text encoders, run once per call before the loops, and the VAE stay on the CPU)."""
    for name in ("unet", "transformer"):
        if getattr(editor.model, name, None) is not None:
            getattr(editor.model, name).to("meta")


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux", "klein"])
def test_the_loops_make_no_per_step_host_syncs(tokenizer, tokenizer_2, tokenizer_t5, family, monkeypatch):
    """On the meta device a value read by the host would fail, and host-to-device copies are
    counted: their number must not grow with the number of steps, in the edit loop (SDXL: its
    time ids too) nor in the inversion's calls (two steps a call) — what CUDA graphs need. The one
    divergence check after the loops (a read per call, not per step) cannot read meta values: it
    is left out here."""
    import leditspp.editor

    finite = leditspp.editor.check_finite
    monkeypatch.setattr(leditspp.editor, "check_finite", lambda t, *a: None if t.is_meta else finite(t, *a))
    traffic = {}
    for steps in (4, 8):
        editor = Editor.from_pipe(_pipeline(family, tokenizer, tokenizer_2, tokenizer_t5))
        image = scene(seed=5)
        inversion = editor.invert(image, steps=steps, seed=0)
        _to_meta(editor)
        with HostTraffic() as mode:
            edits = ["+a hat", Edit("a cat", remove=True, warmup_steps=1)]
            editor.edit(inversion, edits, mask_mode="intersect", user_mask=torch.ones(8, 8), decode=False)
        with HostTraffic() as inverting:
            editor.invert(image, steps=steps, seed=0, inversion_batch=2)
        traffic[steps] = (mode.counts, inverting.counts)
    assert traffic[4][0]["read"] == traffic[8][0]["read"] == 0
    assert traffic[8][0]["to device"] <= traffic[4][0]["to device"]
    assert traffic[4][1]["read"] == traffic[8][1]["read"] == 0
    assert traffic[8][1]["to device"] <= traffic[4][1]["to device"]


# -- precision --------------------------------------------------------------------------------------


def test_bf16_networks_keep_the_solver_state_in_fp32(tokenizer):
    pipe = tiny_sd_pipeline(tokenizer)
    pipe.unet.to(torch.bfloat16)
    pipe.text_encoder.to(torch.bfloat16)
    editor = Editor.from_pipe(pipe)
    inversion = editor.invert(scene(seed=7), steps=6, seed=0)
    assert {t.dtype for t in (inversion.noisy_latents, inversion.denoised, inversion.noise_maps)} == {torch.float32}
    assert inversion.info.dtype == "bfloat16"
    assert torch.equal(editor.edit(inversion, decode=False).latents, inversion.source_latents)
    edited = editor.edit(inversion, ["+a hat", "-a cat"], decode=False).latents
    assert edited.dtype == torch.float32 and torch.isfinite(edited).all()
    assert not torch.equal(edited, inversion.source_latents)


# -- torch.compile ----------------------------------------------------------------------------------


def test_compiled_unet_compiles_per_call_shape_not_per_step(tokenizer):
    from torch._dynamo.utils import counters

    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer))
    image = scene(seed=6)
    edits = ["+a hat", Edit("a cat", remove=True, warmup_steps=2)]
    inversion = editor.invert(image, steps=6, seed=0, inversion_batch=3)
    expected = editor.edit(inversion, edits, decode=False).latents
    torch._dynamo.reset()
    counters.clear()
    try:
        editor.compile(backend="eager")
        compiled_inversion = editor.invert(image, steps=6, seed=0, inversion_batch=3)
        assert counters["stats"]["unique_graphs"] == 1  # two calls of 3 steps: one graph
        assert torch.allclose(compiled_inversion.noise_maps, inversion.noise_maps, atol=1e-5)
        got = editor.edit(inversion, edits, decode=False).latents
        graphs = counters["stats"]["unique_graphs"]
        assert graphs <= 3  # 2 rows (steps 0–1), then 3 rows: 2 shapes, not 6 steps
        again = editor.edit(inversion, edits, decode=False).latents
        assert counters["stats"]["unique_graphs"] == graphs  # nothing recompiles on the next edit
        assert torch.allclose(got, expected, atol=1e-5) and torch.equal(got, again)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize(
    ("device", "options", "expected"),
    [
        ("cuda", {}, {"mode": "reduce-overhead", "dynamic": False}),  # CUDA graphs by default on a GPU
        ("cuda", {"dynamic": True}, {"mode": "reduce-overhead", "dynamic": True}),
        ("cuda", {"mode": "max-autotune"}, {"mode": "max-autotune"}),
        ("cuda", {"backend": "eager"}, {"backend": "eager"}),
        ("cuda", {"options": {"triton.cudagraphs": False}}, {"options": {"triton.cudagraphs": False}}),
        ("cpu", {}, {}),  # no graphs on the CPU: torch.compile's default
        ("cpu", {"mode": "reduce-overhead"}, {"mode": "reduce-overhead", "dynamic": False}),
    ],
)
def test_compile_options_choose_cuda_graphs_on_a_gpu(device, options, expected):
    assert compile_options(torch.device(device), False, options) == expected


def test_cuda_graphs_are_refused_where_the_weights_move(tokenizer):
    with pytest.raises(LeditsError, match="group offload"):
        compile_options(torch.device("cuda"), True, {})
    assert compile_options(torch.device("cuda"), True, {"mode": "default"}) == {"mode": "default"}
    editor = Editor.from_pipe(tiny_sd_pipeline(tokenizer), offload="group")
    with pytest.raises(LeditsError, match="offload='none'"):
        editor.compile(mode="reduce-overhead")


# -- the benchmark script ---------------------------------------------------------------------------


def _gpu_sh(tmp_path: Path, fail: str, **env: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu.sh run with a stand-in interpreter: it prints its arguments, and fails for
    the preset ``fail``."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@"\ncase "$*" in *"--preset {fail} "*) exit 1;; esac\n')
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "OUT": str(tmp_path), **env}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "run"], env=env, capture_output=True, text=True)


def test_gpu_script_runs_only_the_presets_named_and_goes_on_past_a_failure(tmp_path):
    none = _gpu_sh(tmp_path, "x", PRESETS="", FLOW_PRESETS="")
    assert none.returncode == 0 and "--preset" not in none.stdout  # PRESETS= (empty) runs none
    done = _gpu_sh(tmp_path, "a", PRESETS="a b", FLOW_PRESETS="c", OFFLOADS="none group")
    assert done.returncode == 1  # a failure is not a green run …
    assert (tmp_path / "failed.txt").read_text() == "FAILED: a\n"
    assert (tmp_path / "a.failed.md").exists() and not (tmp_path / "a.md").exists()  # … nor a result
    for later in ("b.md", "c-none.md", "c-group.md"):  # and the presets after it still ran
        assert "--preset" in (tmp_path / later).read_text()


@pytest.mark.parametrize("preset", ["smoke", "smoke-xl"])
def test_speed_benchmark_runs_and_reports_ratios(preset):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--preset", preset],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    table = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in out.splitlines() if "|" in line}
    rows = {}
    for case in ("1", "3", "3, warm-up 1"):
        for name in ("leditspp", "diffusers port"):
            cells = [c.strip() for c in table[name, case].split("|")[1:-1]]
            assert float(cells[2]) > 0 and float(cells[3]) >= 0
            rows[name, case] = int(cells[4])
            assert cells[5] == str(4 + 4 * (1 + int(case[0])))  # the floor N + N·(1+E), N = 4
    for e in (1, 3):
        assert rows["leditspp", str(e)] == rows["diffusers port", str(e)] == 4 + 4 * (1 + e)
    assert rows["leditspp", "3, warm-up 1"] == 4 + 3 * 4 < rows["diffusers port", "3, warm-up 1"] == 20
    assert "time ratio (ours / port)" in out


@pytest.mark.parametrize(
    ("preset", "offload"),
    [
        ("smoke-sd3", "none"),
        ("smoke-flux", "model"),
        ("smoke-klein", "group"),
        ("smoke-zimage", "none"),
        ("smoke-qwen", "none"),
    ],
)
def test_flow_benchmark_runs_with_transformer_rows_at_the_floor(preset, offload):
    """The flow transformers' benchmark, under a memory plan: every case evaluates exactly
    N + N·(1+E) transformer rows."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "flow_speed.py"), "--preset", preset, "--offload", offload],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    cases = {cells[0]: cells for cells in rows[1:]}
    assert sorted(cases) == ["1", "3"] and f"offload {offload}" in out
    for cells in cases.values():
        assert float(cells[1]) > 0 and float(cells[3]) >= float(cells[2]) >= 0
        assert cells[4] == cells[5] == str(4 + 4 * (1 + int(cells[0])))
