"""Memory plans: which weights stay on the device while a model edits (issue 25).

A plan names what is resident on the execution device; the rest waits in host RAM and visits the
device through diffusers' and accelerate's own offloading:

* ``none`` — every component on the device;
* ``model`` — the text encoders wait on the CPU and visit the device once per call (accelerate's
  ``cpu_offload_with_hook``, one encoder at a time), the denoiser and the VAE stay;
* ``group`` — the denoiser streams block by block (diffusers' ``enable_group_offload``, block level,
  on CUDA streams where there are some) and so do the text encoders (leaf level: Qwen-Image's 16 GB
  encoder could not visit a 12–16 GB card whole); only the VAE stays;
* ``auto`` — the lightest of those whose resident weights fit the free memory (always ``none`` on
  the CPU): :func:`choose_offload`, a pure rule on byte counts.

Extras on request: fp8 storage of the denoiser's weights (diffusers' ``enable_layerwise_casting``,
computed in the model's dtype) and VAE tiling / slicing for large images. Plans change where
weights live, never what is computed: the same latents under every plan without fp8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from . import defaults
from .errors import LeditsError, check_arguments
from .memory import free_bytes

#: ``auto``, then the concrete plans, lightest (least offloading) first.
CHOICES = defaults.OFFLOADS
AUTO = CHOICES[0]
PLANS = CHOICES[1:]
DENOISERS = ("unet", "transformer")
FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class MemoryPlan:
    """Where the weights live: ``offload`` (one of :data:`CHOICES`) and the opt-in extras."""

    offload: str = defaults.OFFLOAD
    fp8: bool = False  # the denoiser's weights stored in float8_e4m3fn, each layer upcast to compute
    vae_tiling: bool = False  # the VAE en/decodes large images in overlapping tiles
    vae_slicing: bool = False  # the VAE en/decodes a batch one image at a time

    def __post_init__(self) -> None:
        check_arguments("MemoryPlan", vars(self), {"fp8": "bool", "vae_tiling": "bool", "vae_slicing": "bool"})
        if self.offload not in CHOICES:
            raise LeditsError(
                f"offload must be one of {', '.join(map(repr, CHOICES))}; got {self.offload!r} — 'auto' picks "
                "the lightest plan that fits the device's free memory"
            )


def as_plan(offload: str | MemoryPlan) -> MemoryPlan:
    """``offload=`` as given to the editor: a plan name or a :class:`MemoryPlan`."""
    return offload if isinstance(offload, MemoryPlan) else MemoryPlan(offload)


@dataclass(frozen=True)
class ComponentBytes:
    """Parameter and buffer bytes of a model's modules, as a plan places them."""

    denoiser: int
    text_encoders: tuple[int, ...]
    rest: int  # the VAE and any other module

    def resident(self, offload: str) -> int:
        """The most weight bytes on the device at once under the concrete plan ``offload``."""
        if offload == "none":
            return self.denoiser + sum(self.text_encoders) + self.rest
        if offload == "model":  # one encoder visits while the denoiser stays
            return self.denoiser + max(self.text_encoders, default=0) + self.rest
        return self.rest  # group: a block or a layer at a time besides the VAE


def choose_offload(free: int, sizes: ComponentBytes, device_type: str) -> str:
    """The lightest plan whose resident weights fit ``defaults.PLAN_WEIGHT_FRACTION`` of ``free``
    bytes (the rest is left to activations); ``group`` where none does; ``none`` on the CPU.

    >>> GB = 2**30
    >>> sizes = ComponentBytes(8 * GB, (GB, 2 * GB), GB // 4)  # 11.25 GB of weights, 10.25 with one encoder
    >>> choose_offload(24 * GB, sizes, "cuda"), choose_offload(13 * GB, sizes, "cuda")
    ('none', 'model')
    >>> choose_offload(12 * GB, sizes, "cuda"), choose_offload(1 * GB, sizes, "cpu")
    ('group', 'none')
    """
    if device_type == "cpu":
        return "none"
    budget = free * defaults.PLAN_WEIGHT_FRACTION
    return next((plan for plan in PLANS if sizes.resident(plan) <= budget), "group")


def component_bytes(components: Mapping[str, Any], fp8: bool = False) -> ComponentBytes:
    """The :class:`ComponentBytes` of loaded ``components`` (with ``fp8``, the denoiser's at one byte
    a value)."""
    modules = _modules(components)
    sizes = {name: _bytes(module, fp8 and name in DENOISERS) for name, module in modules.items()}
    return ComponentBytes(
        denoiser=sum(v for k, v in sizes.items() if k in DENOISERS),
        text_encoders=tuple(v for k, v in sizes.items() if k.startswith("text_encoder")),
        rest=sum(v for k, v in sizes.items() if k not in DENOISERS and not k.startswith("text_encoder")),
    )


def resolve(plan: MemoryPlan, components: Mapping[str, Any], device: torch.device) -> MemoryPlan:
    """``plan`` with ``auto`` replaced by :func:`choose_offload`'s pick for ``device`` now (weights
    already on the device count as free; components that carry their own offload hooks stay as
    they are: ``none``)."""
    if plan.offload != AUTO:
        return plan
    modules = _modules(components)
    if any(moves_weights(m) for m in modules.values()):
        return replace(plan, offload="none")
    there = sum(_bytes(m, False) for m in modules.values() if _on(m, device))
    offload = choose_offload(free_bytes(device) + there, component_bytes(components, plan.fp8), device.type)
    return replace(plan, offload=offload)


def apply_plan(plan: MemoryPlan, components: Mapping[str, Any], device: torch.device) -> None:
    """Place ``components`` (a pipeline's) for the concrete ``plan`` with ``device`` the execution
    device, in place. Refuses, before changing anything, what cannot work."""
    modules = _modules(components)
    _check(plan, modules)
    denoiser = next(modules[name] for name in DENOISERS if name in modules)
    if plan.fp8:
        denoiser.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=denoiser.dtype)
    previous = None  # the encoder that leaves when the next one visits (plan "model")
    for name, module in modules.items():
        encoder = name.startswith("text_encoder")
        if plan.offload == "none":
            if not moves_weights(module):  # a pipeline's own offload hooks are kept
                module.to(device)
        elif plan.offload == "model" and encoder:
            from accelerate import cpu_offload_with_hook

            _, previous = cpu_offload_with_hook(module, device, prev_module_hook=previous)
        elif plan.offload == "group" and (encoder or module is denoiser):
            _group_offload(module, device, "leaf_level" if encoder else "block_level")
        else:
            module.to(device)
    vae = modules.get("vae")
    if plan.vae_tiling:
        vae.enable_tiling()
    if plan.vae_slicing:
        vae.enable_slicing()


@contextlib.contextmanager
def encoders_leave(components: Mapping[str, Any]) -> Iterator[None]:
    """Text encoders that visited the device for this block (plan ``model``, or a pipeline's
    ``enable_model_cpu_offload``) are back in host RAM when it ends, errors included."""
    from accelerate.hooks import CpuOffload

    try:
        yield
    finally:
        for name, module in components.items():
            hook = getattr(module, "_hf_hook", None)
            if name.startswith("text_encoder") and isinstance(hook, CpuOffload):
                hook.init_hook(module)  # accelerate's own way back to the CPU


def _check(plan: MemoryPlan, modules: Mapping[str, torch.nn.Module]) -> None:
    """Refuse a plan these modules cannot take, naming the fix."""
    if plan.offload == AUTO:
        raise LeditsError("resolve offload='auto' to a plan first (leditspp.offload.resolve)")
    denoiser = next((modules[name] for name in DENOISERS if name in modules), None)
    if denoiser is None:
        raise LeditsError("a memory plan needs the model's denoiser (unet or transformer) among its components")
    hooked = sorted(name for name, m in modules.items() if moves_weights(m))
    if hooked and plan.offload != "none":
        raise LeditsError(
            f"offload={plan.offload!r}: {', '.join(hooked)} already carry offload hooks (enable_model_cpu_offload "
            "or group offloading); pass offload='none' to keep them, or a pipeline without them"
        )
    if plan.offload == "group" and not getattr(denoiser, "_supports_group_offloading", False):
        raise LeditsError(
            f"offload='group': {type(denoiser).__name__} does not support diffusers' group offloading; "
            "use offload='model'"
        )
    if plan.fp8 and not hasattr(denoiser, "enable_layerwise_casting"):
        raise LeditsError(f"fp8=True: {type(denoiser).__name__} has no enable_layerwise_casting; leave fp8 off")
    vae = modules.get("vae")
    for extra, method in (("vae_tiling", "enable_tiling"), ("vae_slicing", "enable_slicing")):
        if getattr(plan, extra) and not hasattr(vae, method):
            raise LeditsError(f"{extra}=True: this model's VAE ({type(vae).__name__}) has no {method}(); leave it off")


def _group_offload(module: torch.nn.Module, device: torch.device, offload_type: str) -> None:
    """diffusers' group offloading of ``module`` onto ``device`` from the CPU (streams on CUDA)."""
    from diffusers.hooks import apply_group_offloading

    streams = device.type == "cuda"
    module.to("cpu")
    apply_group_offloading(
        module,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type=offload_type,
        num_blocks_per_group=1 if offload_type == "block_level" else None,
        non_blocking=streams,
        use_stream=streams,
    )


def _modules(components: Mapping[str, Any]) -> dict[str, torch.nn.Module]:
    return {name: value for name, value in components.items() if isinstance(value, torch.nn.Module)}


def _bytes(module: torch.nn.Module, one_byte: bool) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * (1 if one_byte and t.is_floating_point() else t.element_size()) for t in tensors)


def _on(module: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``module``'s weights are on ``device`` (``cuda`` meaning the current CUDA device)."""
    first = next(iter([*module.parameters(), *module.buffers()]), None)
    if first is None or first.device.type != device.type:
        return False
    return device.index is None or first.device.index == device.index


def moves_weights(module: torch.nn.Module) -> bool:
    """Whether ``module`` carries accelerate's or diffusers' offload hooks (its weights visit the
    device per call rather than staying there)."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return hasattr(module, "_hf_hook") or _is_group_offload_enabled(module)
