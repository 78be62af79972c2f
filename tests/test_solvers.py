"""The solver tables against diffusers' schedulers, and the step's algebra, without a network."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler

from leditspp.demo import SD_SCHEDULE
from leditspp.errors import LeditsError
from leditspp.models.unet import to_epsilon
from leditspp.solvers import NoisePath, add_noise_map, extract_noise, step_mean, step_table

SD_CONFIG = SD_SCHEDULE


def as_data(x, eps, table, j):
    """x̂0 = (x − s·ε)/a at step j (what the UNet adapter's to_data does)."""
    return (x - float(table.sigma[j]) * eps) / float(table.alpha[j])


@pytest.fixture
def schedule():
    return NoisePath.from_scheduler_config(SD_CONFIG)


@pytest.mark.parametrize(("steps", "skip"), [(30, 0.15), (50, 0.1), (20, 0.25), (1, 0.0), (3, 0.5)])
def test_dpm_timesteps_match_diffusers_leading_spacing(schedule, steps, skip):
    ref = DPMSolverMultistepScheduler(**SD_CONFIG, timestep_spacing="leading")
    ref.set_timesteps(int(steps * (1 + skip)))
    assert step_table("dpmsolver++", schedule, steps, skip).timesteps.tolist() == ref.timesteps[-steps:].tolist()


def test_dpm_timesteps_of_spec_example(schedule):
    t = step_table("dpmsolver++", schedule, 30, 0.15).timesteps.tolist()
    assert t[:3] == [841, 813, 785] and t[-3:] == [85, 57, 29]


@pytest.mark.parametrize(("steps", "skip"), [(30, 0.15), (50, 0.1), (10, 0.2), (1, 0.0)])
def test_ddpm_timesteps_match_diffusers_ddim(schedule, steps, skip):
    ref = DDIMScheduler(**SD_CONFIG, timestep_spacing="leading")
    ref.set_timesteps(int(steps * (1 + skip)))
    assert step_table("ddpm", schedule, steps, skip).timesteps.tolist() == ref.timesteps[-steps:].tolist()


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8, 25])
def test_trailing_timesteps_match_turbo_and_lightning_schedulers(steps):
    """SD-Turbo/SDXL-Turbo/Lightning ship trailing spacing (999, 749, 499, 249 for 4 steps)."""
    path = NoisePath.from_scheduler_config({**SD_CONFIG, "timestep_spacing": "trailing"})
    assert path.spacing == "trailing"
    for solver, reference in (("ddpm", DDIMScheduler), ("dpmsolver++", DPMSolverMultistepScheduler)):
        ref = reference(**SD_CONFIG, timestep_spacing="trailing")
        ref.set_timesteps(steps)
        assert step_table(solver, path, steps, 0.0).timesteps.tolist() == ref.timesteps.tolist()
    euler = EulerDiscreteScheduler(**SD_CONFIG, timestep_spacing="trailing")
    euler.set_timesteps(steps)
    assert step_table("ddpm", path, steps, 0.0).timesteps.tolist() == euler.timesteps.tolist()
    if steps == 4:
        assert step_table("ddpm", path, 4, 0.0).timesteps.tolist() == [999, 749, 499, 249]


@pytest.mark.parametrize(("steps", "skip"), [(30, 0.15), (4, 0.0), (1, 0.0)])
def test_linspace_timesteps_match_diffusers_dpm(steps, skip):
    path = NoisePath.from_scheduler_config(SD_CONFIG, spacing="linspace")
    ref = DPMSolverMultistepScheduler(**SD_CONFIG, timestep_spacing="linspace")
    ref.set_timesteps(int(steps * (1 + skip)))
    assert step_table("dpmsolver++", path, steps, skip).timesteps.tolist() == ref.timesteps[-steps:].tolist()


def test_spacing_follows_the_scheduler_config():
    """SD/SDXL configs (leading, linspace or none) keep the port's leading spacing (SPEC A2)."""
    read = NoisePath.from_scheduler_config
    assert read(SD_CONFIG).spacing == read({**SD_CONFIG, "timestep_spacing": "linspace"}).spacing == "leading"
    assert read({**SD_CONFIG, "_class_name": "LCMScheduler"}).spacing == "lcm"
    assert read({**SD_CONFIG, "timestep_spacing": "trailing"}, spacing="leading").spacing == "leading"
    with pytest.raises(LeditsError, match="spacing"):
        read(SD_CONFIG, spacing="uniform")


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 50])
def test_lcm_timesteps_match_diffusers_lcm(steps):
    path = NoisePath.from_scheduler_config({**SD_CONFIG, "_class_name": "LCMScheduler"})
    ref = LCMScheduler(**SD_CONFIG)
    ref.set_timesteps(steps)
    assert step_table("lcm", path, steps, 0.0).timesteps.tolist() == ref.timesteps.tolist()
    with pytest.raises(LeditsError, match="original_inference_steps"):
        step_table("lcm", path, 51, 0.0)


def test_lcm_step_matches_diffusers_lcm_scheduler():
    """The consistency step x' = a'·(c_skip·x + c_out·x̂₀) + s'·z equals LCMScheduler.step; the
    last step goes on to training index 0 with noise (the sampler stops at its denoised)."""
    steps = 4
    path = NoisePath.from_scheduler_config({**SD_CONFIG, "_class_name": "LCMScheduler"})
    table = step_table("lcm", path, steps, 0.0)
    ref = LCMScheduler(**SD_CONFIG)
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 8, 8, generator=g)
    for j, t in enumerate(ref.timesteps):
        eps = torch.randn(1, 4, 8, 8, generator=g)
        out = ref.step(eps, t, x, generator=torch.Generator().manual_seed(j))
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(j))
        mean, _ = step_mean(x, as_data(x, eps, table, j), None, table, j)
        ours = add_noise_map(mean, z, table, j)
        if j < steps - 1:
            assert torch.allclose(ours, out.prev_sample, atol=1e-5, rtol=1e-5), f"step {j}"
        else:
            a0, s0 = (float(v) for v in path.levels(torch.zeros(1)))
            assert torch.allclose(ours, a0 * out.denoised + s0 * z, atol=1e-5, rtol=1e-5)
        x = out.prev_sample


def test_dpm_step_matches_diffusers_sde_dpmsolver_with_sigma_min(schedule):
    """Our table reproduces DPMSolverMultistepScheduler.step (sde-dpmsolver++, order 2, sigma_min)."""
    steps, skip = 20, 0.15
    table = step_table("dpmsolver++", schedule, steps, skip)
    ref = DPMSolverMultistepScheduler(
        **SD_CONFIG,
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        final_sigmas_type="sigma_min",
        timestep_spacing="leading",
    )
    ref.set_timesteps(int(steps * (1 + skip)))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ours, prev = x.clone(), None
    for j, t in enumerate(table.timesteps.long()):
        eps = torch.randn(1, 4, 8, 8, generator=g)
        z = torch.randn(1, 4, 8, 8, generator=g)
        x = ref.step(eps, t, x, variance_noise=z).prev_sample
        mean, prev = step_mean(ours, as_data(ours, eps, table, j), prev, table, j)
        ours = add_noise_map(mean, z, table, j)
        assert torch.allclose(ours, x, atol=1e-5, rtol=1e-5), f"step {j}"


def test_ddpm_step_matches_diffusers_ddim_eta_one(schedule):
    steps, skip = 10, 0.2
    table = step_table("ddpm", schedule, steps, skip)
    ref = DDIMScheduler(**SD_CONFIG, set_alpha_to_one=False, clip_sample=False, timestep_spacing="leading")
    ref.set_timesteps(int(steps * (1 + skip)))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ours = x.clone()
    for j, t in enumerate(table.timesteps.long()):
        eps = torch.randn(1, 4, 8, 8, generator=g)
        z = torch.randn(1, 4, 8, 8, generator=g)
        x = ref.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample
        mean, _ = step_mean(ours, as_data(ours, eps, table, j), None, table, j)
        ours = add_noise_map(mean, z, table, j)
        assert torch.allclose(ours, x, atol=1e-5, rtol=1e-5), f"step {j}"


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm", "lcm"])
def test_last_step_targets_smallest_training_noise(schedule, solver):
    table = step_table(solver, schedule, 30, 0.15)
    assert bool((table.noise > 0).all())
    # the last step ends at training index 0: its noise weight is below s_0 = sqrt(1 - abar_0)
    assert float(table.noise[-1]) <= float((1 - schedule.alphas_cumprod[0]).sqrt()) + 1e-12
    if solver == "dpmsolver++":
        assert float(table.coef_2[0]) == 0.0 and bool((table.coef_2[1:] != 0).all())


def test_noise_extraction_round_trip(schedule):
    table = step_table("dpmsolver++", schedule, 5, 0.1)
    g = torch.Generator().manual_seed(2)
    x, eps, prev, target = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(4))
    mean, _ = step_mean(x, as_data(x, eps, table, 3), prev, table, 3)
    z = extract_noise(target, mean, table, 3)
    assert torch.allclose(add_noise_map(mean, z, table, 3), target, atol=1e-6)


def test_v_prediction_conversion_is_consistent():
    a, s = 0.6, 0.8
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(4, generator=g), torch.randn(4, generator=g)
    x = a * x0 + s * eps
    v = a * eps - s * x0
    assert torch.allclose(to_epsilon(v, x, a, s, "v_prediction"), eps, atol=1e-6)
    assert torch.allclose(to_epsilon(x0, x, a, s, "sample"), eps, atol=1e-6)


@pytest.mark.parametrize(
    ("steps", "skip", "message"),
    [(0, 0.1, "steps"), (2.5, 0.1, "steps"), (10, 1.0, "skip"), (10, 15, "did you mean 0.15"), (900, 0.5, "fewer")],
)
def test_bad_step_settings_are_refused(schedule, steps, skip, message):
    with pytest.raises(LeditsError, match=message):
        step_table("dpmsolver++", schedule, steps, skip)


def test_unsupported_scheduler_settings_are_refused():
    with pytest.raises(LeditsError, match="use_karras_sigmas"):
        NoisePath.from_scheduler_config({**SD_CONFIG, "use_karras_sigmas": True})
    with pytest.raises(LeditsError, match="flow-matching"):
        NoisePath.from_scheduler_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})
    with pytest.raises(LeditsError, match="solver"):
        step_table("euler", NoisePath.from_scheduler_config(SD_CONFIG), 10, 0.1)


def test_the_one_ddpm_formula_is_ddims_on_a_vp_path():
    """The flow-posterior form the DDPM table uses equals DDIM's (η = 1) variance and ε weight on
    a variance-preserving path to rounding (1e-12), so no branch on the path's kind is needed."""
    from leditspp.solvers import NoisePath, step_table

    path = NoisePath.from_scheduler_config(
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
    )
    table = step_table("ddpm", path, 50, 0.0)
    a, s = table.alpha, table.sigma
    a_next = torch.cat([a[1:], path.levels(table.end)[0]])
    src, dst = a**2, a_next**2
    var = (1 - dst) / (1 - src) * (1 - src / dst)
    k = (1 - dst - var).clamp_min(0).sqrt()
    assert torch.allclose(table.noise, var.sqrt(), atol=1e-12, rtol=0)
    assert torch.allclose(table.coef_x, k / s, atol=1e-12, rtol=0)
