"""The tiny SD/SDXL/SD3/FLUX.1 builders of :mod:`leditspp.testing.tiny`: seeded inside
``torch.random.fork_rng``, so building a model leaves the caller's global RNG exactly as it was,
and the same seed gives the same weights."""

from __future__ import annotations

import pytest
import torch

from leditspp.testing import (
    FLUX_VAE_FACTORS,
    tiny_flow_vae,
    tiny_flux_components,
    tiny_sd3_components,
    tiny_sd_components,
    tiny_sdxl_components,
    tiny_vae,
)


@pytest.fixture(scope="module")
def builders(tokenizer, tokenizer_2, tokenizer_t5):
    return {
        "sd": lambda seed: tiny_sd_components(tokenizer, seed=seed),
        "sdxl": lambda seed: tiny_sdxl_components(tokenizer, tokenizer_2, seed=seed),
        "sd3": lambda seed: tiny_sd3_components(tokenizer, tokenizer_2, tokenizer_t5, seed=seed),
        "flux": lambda seed: tiny_flux_components(tokenizer, tokenizer_t5, seed=seed),
        "vae": lambda seed: {"vae": tiny_vae(seed)},
        "flow_vae": lambda seed: {"vae": tiny_flow_vae(seed, **FLUX_VAE_FACTORS)},
    }


def _weights(components: dict) -> dict[str, torch.Tensor]:
    return {
        f"{key}.{name}": tensor
        for key, module in components.items()
        if isinstance(module, torch.nn.Module)
        for name, tensor in module.state_dict().items()
    }


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux", "vae", "flow_vae"])
def test_building_leaves_the_global_rng_alone_and_is_deterministic(builders, family):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = _weights(builders[family](0))
    assert torch.equal(torch.random.get_rng_state(), state), "the builder changed the caller's RNG"
    again = _weights(builders[family](0))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first), "same seed, other weights"
    other = _weights(builders[family](1))
    assert any(not torch.equal(first[k], other[k]) for k in first), "the seed does not reach the weights"
