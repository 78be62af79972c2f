"""Flow-matching transformers (issue 14): SD3/3.5 on the rectified-flow path, exact and masked."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from leditspp import Edit, Editor, LeditsError
from leditspp.masking import MASK_MODES
from leditspp.model_options import ModelOptions
from leditspp.solvers import FlowPath, add_noise_map, step_mean, step_table
from leditspp.testing import replay_tolerance, tiny_sd3_pipeline

from .conftest import scene

SHIFT3 = FlowPath(shift=3.0)


# -- the path and the solver steps -----------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 4, 28])
def test_flow_times_are_the_schedulers_own(steps):
    """The first N times of the checkpoint scheduler's (N+1)-step schedule; the last step goes to
    its smallest σ (> 0), SD3's static shift and FLUX's dynamic one alike."""
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(steps + 1)
    table = step_table("dpmsolver++", SHIFT3, steps, 0.0)
    assert torch.allclose(table.timesteps, ref.timesteps[:steps].double(), atol=1e-3)
    assert torch.allclose(SHIFT3.end(), ref.timesteps[-1:].double(), atol=1e-3) and float(SHIFT3.end()) > 0
    flux = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    path = FlowPath.from_scheduler_config(flux.config).for_tokens(1024)
    flux.set_timesteps(steps + 1, mu=path.mu)
    assert torch.allclose(step_table("ddpm", path, steps, 0.0).timesteps, flux.timesteps[:steps].double(), atol=1e-3)


class _DiffusersGrid:
    """A flow path on DPMSolverMultistepScheduler's own σ grid (use_flow_sigmas), to compare steps."""

    kind = "flow"
    spacing = "flow"

    def __init__(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas.double()

    def times(self, count: int, grid_points: int) -> torch.Tensor:
        return self.sigmas[:count] * 1000

    def end(self, count: int = 1) -> torch.Tensor:
        return self.sigmas[-1:] * 1000

    levels = FlowPath.levels


def test_dpm_step_on_a_flow_matches_diffusers():
    """SDE-DPM-Solver++(2M) on a_t = 1 − σ, s_t = σ equals diffusers' flow-sigma DPM step."""
    steps = 8
    ref = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction", algorithm_type="sde-dpmsolver++"
    )
    ref.set_timesteps(steps)
    path = _DiffusersGrid(ref.sigmas[:-1].clone())  # the comparison stops before diffusers' final σ
    path.num_train_timesteps = 1000
    table = step_table("dpmsolver++", path, steps - 1, 0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ours, prev = x.clone(), None
    for j in range(steps - 1):
        v, z = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
        x = ref.step(v, ref.timesteps[j], x, variance_noise=z).prev_sample
        mean, prev = step_mean(ours, ours - float(table.sigma[j]) * v, prev, table, j)
        ours = add_noise_map(mean, z, table, j)
        if j < steps - 2:  # diffusers' step before its last is not the one whose target we drop
            assert torch.allclose(ours, x, atol=1e-5, rtol=1e-5), f"step {j}"


def test_ddpm_step_on_a_flow_is_the_flow_posterior():
    """With a perfect estimate (x̂0 = x0, ε̂ = ε) the step is μ = a'·x0 + √(s'² − c²)·ε with noise
    c = s'·√(1 − (a·s'/(a'·s))²): Euler at c = 0, a full re-noise from σ = 1 (c = s')."""
    table = step_table("ddpm", SHIFT3, 4, 0.0)
    a, s = table.alpha, table.sigma
    a_next, s_next = (
        torch.cat([a[1:], SHIFT3.levels(SHIFT3.end())[0]]),
        torch.cat([s[1:], SHIFT3.levels(SHIFT3.end())[1]]),
    )
    c = s_next * (1 - (a * s_next / (a_next * s)) ** 2).sqrt()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 1, 4, 4, generator=g)
    for j in range(4):
        x = float(a[j]) * x0 + float(s[j]) * eps
        mean, _ = step_mean(x, x0, None, table, j)
        want = float(a_next[j]) * x0 + float((s_next[j] ** 2 - c[j] ** 2).clamp_min(0).sqrt()) * eps
        assert torch.allclose(mean, want, atol=1e-6) and abs(float(table.noise[j] - c[j])) < 1e-12
    assert float(table.noise[0]) == pytest.approx(float(s_next[0]))  # from σ = 1: a full re-noise


def test_lcm_is_refused_on_a_flow():
    with pytest.raises(LeditsError, match="lcm solver"):
        step_table("lcm", SHIFT3, 4, 0.0)


# -- SD3 end to end -----------------------------------------------------------------------------------

GRID = list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 28], [0.0, 0.15], [1, 2], ["", "a photo of a cat"]))


@pytest.mark.parametrize(("solver", "steps", "skip", "batch", "source"), GRID)
def test_sd3_reconstruction_is_exact(sd3_editor, solver, steps, skip, batch, source):
    images = [scene(64, 64, seed=i) for i in range(batch)]
    inv = sd3_editor.invert(images, steps=steps, skip=skip, solver=solver, seed=0, source_prompt=source)
    assert inv.noise_maps.shape == (steps, batch, 16, 8, 8)
    assert (sd3_editor.edit(inv, decode=False).latents - inv.source_latents).abs().max() <= 1e-5


def test_sd3_folder_through_the_api_and_refusals(sd3_folder, editor):
    sd3 = Editor.from_pretrained(str(sd3_folder), device="cpu")
    assert sd3.model.family == "sd3" and sd3.size_multiple == 16
    inv = sd3.invert(scene(), steps=4, skip=0.0, seed=0)
    assert inv.info.family == "sd3"
    image = sd3.edit(inv, ["+a red hat"]).images[0]
    assert image.size == (64, 64)
    with pytest.raises(LeditsError, match="another model"):
        editor.edit(inv, ["+a hat"])  # an SD3 inversion on the SD editor
    with pytest.raises(LeditsError, match="lcm solver"):
        sd3.invert(scene(), steps=4, solver="lcm")


def test_sd3_without_t5_reads_masks_from_clip(tokenizer, tokenizer_2, tokenizer_t5):
    pipe = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5)
    pipe.text_encoder_3, pipe.tokenizer_3 = None, None
    editor = Editor.from_pipe(
        SimpleNamespace(components={**pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    )
    assert editor.model.token_positions("a red hat") == [1, 2, 3]
    inv = editor.invert(scene(), steps=4, skip=0.0, seed=0)
    out = editor.edit(inv, ["+a red hat"], decode=False)
    assert not torch.allclose(out.latents, inv.source_latents, atol=1e-3)


def test_a_saved_sd3_inversion_keeps_its_noise_path(sd3_editor, tmp_path):
    from leditspp import Inversion

    inv = sd3_editor.invert(scene(), steps=4, skip=0.0, seed=0)
    loaded = Inversion.load(inv.save(tmp_path / "sd3.inv.safetensors"))
    assert loaded.info.noise_path == "flow shift 3" and loaded.timesteps.dtype == torch.float64
    assert torch.equal(sd3_editor.edit(loaded, decode=False).latents, inv.source_latents)


# -- FLUX.1 --------------------------------------------------------------------------------------------

FLUX_GRID = list(itertools.product(["dpmsolver++", "ddpm"], [1, 4, 28], [0.0, 0.15], [1, 2], ["", "a photo"]))


@pytest.mark.parametrize(("solver", "steps", "skip", "batch", "source"), FLUX_GRID)
def test_flux_reconstruction_is_exact(flux_editor, solver, steps, skip, batch, source):
    images = [scene(64, 64, seed=i) for i in range(batch)]
    inv = flux_editor.invert(images, steps=steps, skip=skip, solver=solver, seed=0, source_prompt=source)
    assert inv.info.noise_path.startswith("flow mu")  # FLUX.1 [dev]'s shift depends on the size
    assert (flux_editor.edit(inv, decode=False).latents - inv.source_latents).abs().max() <= 1e-5


def test_flux_packing_round_trips_and_the_shift_follows_the_size(flux_editor):
    from leditspp.models.flux import pack, unpack

    x = torch.randn(2, 16, 8, 12)
    assert pack(x).shape == (2, 24, 64) and torch.equal(unpack(pack(x), 8, 12), x)
    small, large = flux_editor.model.noise_path(8, 8), flux_editor.model.noise_path(64, 64)
    assert small.mu < large.mu  # more tokens, more shift (FLUX's calculate_shift)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_flux_replay_batches_and_mask_modes(flux_editor, mode):
    images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
    inv = flux_editor.invert(images, steps=6, seed=1)
    replay = flux_editor.edit(inv, [Edit("a red hat", scale=0.0)], mask_mode=mode, decode=False).latents
    assert (replay - inv.source_latents).abs().max() <= replay_tolerance(inv.source_latents)
    edits = [Edit("a red hat", scale=6.0, threshold=0.7), "-a cat"]
    both = flux_editor.edit(inv, edits, mask_mode=mode, decode=False)
    alone = flux_editor.edit(inv.select(0), edits, mask_mode=mode, decode=False).latents
    assert not torch.allclose(both.latents, inv.source_latents, atol=1e-3)
    assert (both.latents[:1] - alone).abs().max() <= replay_tolerance(alone)


def test_a_tiny_flux_folder_edits_through_the_api_cli_and_web_ui(flux_folder, flux_editor, tmp_path):
    import json

    from PIL import Image

    from leditspp.cli import main
    from leditspp.webui import EditorService, run_edit

    assert flux_editor.model.family == "flux" and flux_editor.size_multiple == 16
    image = flux_editor.edit(flux_editor.invert(scene(), steps=4, seed=0), ["+a red hat"]).images[0]
    assert image.size == (64, 64)
    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    scene(96, 64).save(photo)
    args = ["edit", str(photo), "-e", "+a red hat:6", "-e", "-a cat", "--model", str(flux_folder), "--steps", "4"]
    assert main([*args, "--device", "cpu", "-o", str(out), "--quiet", "--masks"]) == 0
    assert Image.open(out).size == (64, 96) and json.loads(Image.open(out).text["leditspp"])["steps"] == 4
    service = EditorService(model=str(flux_folder), options=ModelOptions(device="cpu"))
    settings = {"steps": 4, "skip": 0.0, "solver": "ddpm", "seed": 0, "source_prompt": "", "source_guidance": 3.5}
    edited, overlays, *_ = run_edit(
        service, scene(), [["a red hat", "+", 6, 0.8, 0, None]], {**settings, "mask_mode": "noise"}
    )
    assert edited.size == (64, 64) and len(overlays) == 1


def test_sd35_schnell_and_bf16_variants(tokenizer, tokenizer_2, tokenizer_t5):
    """SD3.5's q/k RMS norms in the joint attention, FLUX.1 [schnell]'s static shift (no guidance
    input), and bf16 networks with fp32 solver state: each exact and editing."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from leditspp.testing import tiny_flux_pipeline

    sd35 = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5, qk_norm="rms_norm")
    schnell = tiny_flux_pipeline(tokenizer, tokenizer_t5, guidance_embeds=False)
    schnell.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    bf16 = tiny_sd3_pipeline(tokenizer, tokenizer_2, tokenizer_t5)
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
        getattr(bf16, name).to(torch.bfloat16)
    for pipe, path in ((sd35, "flow shift 3"), (schnell, "flow shift 1"), (bf16, "flow shift 3")):
        editor = Editor.from_pipe(pipe)
        inv = editor.invert(scene(), steps=4, skip=0.0, seed=0)
        assert inv.info.noise_path == path and inv.noise_maps.dtype == torch.float32
        assert torch.equal(editor.edit(inv, decode=False).latents, inv.source_latents)
        out = editor.edit(inv, [Edit("a red hat", scale=6.0, threshold=0.8)], decode=False)
        assert not torch.allclose(out.latents, inv.source_latents, atol=1e-3) and 0 < out.mask_means.mean() < 1
    assert inv.info.dtype == "bfloat16"


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_pipeline_grids_with_terminal_and_empirical_mu_match_diffusers(steps):
    """Qwen-Image's schedule (pipeline σ grid, dynamic shift, stretched to σ = 0.02) and FLUX.2's
    (pipeline grid, μ from the token count and the step count): our times are the first N of
    the scheduler's (N+1)-step run with the sigmas and μ the pipeline passes, the end its last σ."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    from leditspp.solvers.flow import empirical_mu

    points = steps + 1
    sigmas = torch.linspace(1.0, 1 / points, points).tolist()
    qwen = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256, max_image_seq_len=8192,
        shift_terminal=0.02,
    )  # fmt: skip
    path = FlowPath.from_scheduler_config(qwen.config, grid="pipeline").for_tokens(1024)
    qwen.set_timesteps(sigmas=sigmas, mu=path.mu)
    table = step_table("dpmsolver++", path, steps, 0.0)
    assert torch.allclose(table.timesteps, qwen.timesteps[:steps].double(), atol=1e-3)
    assert torch.allclose(table.end, qwen.timesteps[steps:].double(), atol=1e-3) and abs(float(table.end) - 20) < 1e-6
    klein = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    path = FlowPath.from_scheduler_config(klein.config, grid="pipeline", mu_rule="empirical").for_tokens(4096)
    assert abs(empirical_mu(4096, points) - compute_empirical_mu(4096, points)) < 1e-9
    assert abs(empirical_mu(5000, points) - compute_empirical_mu(5000, points)) < 1e-9
    klein.set_timesteps(sigmas=sigmas, mu=compute_empirical_mu(4096, points))
    table = step_table("ddpm", path, steps, 0.0)
    assert torch.allclose(table.timesteps, klein.timesteps[:steps].double(), atol=1e-3)
    assert torch.allclose(table.end, klein.timesteps[steps:].double(), atol=1e-3)
    assert "empirical-mu tokens 4096 pipeline-grid" in path.describe()


def test_a_dynamic_path_without_the_image_size_is_refused_with_the_fix():
    path = FlowPath.from_scheduler_config(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config)
    with pytest.raises(LeditsError, match="noise_path"):
        step_table("dpmsolver++", path, 4, 0.0)
    with pytest.raises(LeditsError, match="shift_terminal"):
        FlowPath.from_scheduler_config({"shift_terminal": 1.5})
