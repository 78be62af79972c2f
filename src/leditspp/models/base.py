"""What every model family provides to the one inversion loop and the one edit loop.

A family's adapter (:class:`ModelAdapter`) is composed of four parts with one job each: a
:class:`TextStack` turns text into :class:`Conditioning`, a :class:`Denoiser` runs the network on
stacked rows on its noise path, an :class:`Autoencoder` moves images in and out of latent space,
an :class:`AttentionTap` reads the attention for the mask M¹. Everything else (solver, guidance,
masks) is shared. Helpers every part uses live here too (the tokenizer lock, where a module runs,
per-size caches, the weights' fingerprint).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..attention import AttentionRecorder
from ..solvers import NoiseLevel, Path

logger = logging.getLogger("leditspp")


@dataclass(frozen=True)
class Conditioning:
    """Text conditions as named, row-aligned tensors: one row per condition in every value (the
    shape of Stability's ``sgm`` ``prepare_inputs``). ``embeds`` (n, L, D) always; ``pooled``
    (n, P) where the family has a pooled text vector; a family adds what its network needs beside
    them (e.g. ``mask`` (n, L), a text attention mask). Rows are repeated, concatenated and taken
    key by key, so whatever a family adds travels through :class:`~leditspp.rows.RowLayout`.
    """

    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        rows = {name: t.shape[0] for name, t in self.tensors.items()}
        if "embeds" not in rows or len(set(rows.values())) != 1:
            raise ValueError(f"a Conditioning needs 'embeds' and one row count in every tensor; got {rows}")

    @classmethod
    def of(cls, embeds: torch.Tensor, pooled: torch.Tensor | None = None, **more: torch.Tensor | None) -> Conditioning:
        """``Conditioning.of(embeds, pooled, mask=…)``; None values are left out."""
        named = {"embeds": embeds, "pooled": pooled, **more}
        return cls({k: v for k, v in named.items() if v is not None})

    @property
    def embeds(self) -> torch.Tensor:
        return self.tensors["embeds"]

    @property
    def pooled(self) -> torch.Tensor | None:
        return self.tensors.get("pooled")

    def get(self, name: str) -> torch.Tensor | None:
        return self.tensors.get(name)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.tensors))

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        """``fn`` applied to every tensor (each keeps its name)."""
        return Conditioning({k: fn(v) for k, v in self.tensors.items()})

    def repeat_rows(self, times: int) -> Conditioning:
        """Each row repeated ``times`` times in place: [c1, c1, c2, c2, …] (block layout)."""
        return self.map(lambda t: t.repeat_interleave(times, dim=0))

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Rows of ``parts`` one after another; every part must carry the same names."""
        keys = {p.keys for p in parts}
        if len(keys) != 1:
            raise ValueError(f"conditionings with different tensors cannot be stacked: {sorted(keys)}")
        return Conditioning({k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors})

    def row(self, i: int) -> Conditioning:
        return self.map(lambda t: t[i : i + 1])


class TextStack(Protocol):
    """Text → :class:`Conditioning`: the prompts' encodings and where a concept's tokens sit."""

    #: The tensors of its Conditioning (see :meth:`encode_prompts`).
    condition_keys: tuple[str, ...]
    #: c_∅ of the empty negative prompt is all zeros (SDXL's ``force_zeros_for_empty_prompt``).
    zeros_for_empty: bool

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """One row per prompt, in the encoder's dtype (the adapter casts to the denoiser's)."""

    def token_positions(self, prompt: str) -> list[int]:
        """The positions of ``prompt``'s own tokens among the L text tokens the denoiser sees."""

    def modules(self) -> dict[str, Any]:
        """Its networks by component name (``text_encoder``, …)."""


class Denoiser(Protocol):
    """The network on stacked rows and the noise path it was trained on."""

    path: Path  # the noise levels and the spacing the solver tables are built from

    @property
    def device(self) -> torch.device:
        """The execution device: where the network runs and the loops' tensors live (under a memory
        plan its parameters may wait elsewhere, see :mod:`leditspp.offload`)."""

    @property
    def dtype(self) -> torch.dtype: ...

    def noise_path(self, height: int, width: int) -> Path:
        """The path for an ``height × width`` latent grid (FLUX's shift depends on the size)."""

    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The estimate guidance acts on, (R, C, h, w) fp32: ε for DDPM-trained families, the
        velocity v for flow models."""

    def to_data(self, estimate: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """The data prediction x̂0 of a (guided) estimate at ``x``, (B, C, h, w)."""

    def row_bytes(self, height: int, width: int) -> int:
        """Estimated peak activation bytes of one row on an ``height × width`` latent grid."""

    def compile(self, **options: Any) -> None:
        """``torch.compile`` the network in place."""

    def modules(self) -> dict[str, Any]:
        """Its network by component name (``unet`` or ``transformer``)."""


class Autoencoder(Protocol):
    """Pixels in and out of the denoiser's latent space."""

    #: Image pixels per latent cell along a side.
    factor: int

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → latents (B, C, H/factor, W/factor), fp32."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → images (B, 3, h·factor, w·factor) in [−1, 1], fp32."""

    def modules(self) -> dict[str, Any]:
        """Its network by component name (``vae``)."""


class AttentionTap(Protocol):
    """Where the attention mask M¹ is read (paper Eq. 13)."""

    #: M¹'s grid is 1/2^mask_level of the latent grid.
    mask_level: int

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionRecorder]:
        """Arm the attention layers for the calls made inside; yields their recorder."""


@dataclass(frozen=True, kw_only=True)
class ModelAdapter:
    """The seam between the loops and a model family: four parts, one job each.

    A family (a file under ``models/``, or another host such as ComfyUI) composes its adapter from
    a :class:`TextStack`, a :class:`Denoiser`, an :class:`Autoencoder` and an
    :class:`AttentionTap`; families that share an encoder or a network share the part (FLUX.2
    [klein] and Z-Image one Qwen3 chat-template text stack). A built-in family subclasses this
    class only to add its detection and construction (:mod:`.families`)::

        adapter = ModelAdapter(family="mine", text=MyText(...), denoiser=MyNet(...),
                               autoencoder=ScaledVAE(vae), attention=KernelTap(net, layers, layout, 1))

    The loops (inversion, editing, masks, rows) read it as below and never see a network.
    """

    family: str
    text: TextStack
    denoiser: Denoiser
    autoencoder: Autoencoder
    attention: AttentionTap

    # -- the denoiser --------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.denoiser.path

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def noise_path(self, height: int, width: int) -> Path:
        return self.denoiser.noise_path(height, width)

    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        return self.denoiser.estimate(latents, level, cond)

    def to_data(self, estimate: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        return self.denoiser.to_data(estimate, x, level)

    def row_bytes(self, height: int, width: int) -> int:
        return self.denoiser.row_bytes(height, width)

    def compile(self, **options: Any) -> None:
        self.denoiser.compile(**options)

    # -- the attention mask --------------------------------------------------------------------

    @property
    def mask_level(self) -> int:
        return self.attention.mask_level

    def mask_grid(self, height: int, width: int) -> tuple[int, int]:
        """M¹'s grid for an ``height × width`` latent grid."""
        return height >> self.mask_level, width >> self.mask_level

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionRecorder]:
        return self.attention.capture_attention()

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the autoencoder's factor times 2^mask_level, so
        that the latents cover whole cells of M¹'s grid (whole tokens of a patched transformer)."""
        return self.autoencoder.factor << self.mask_level

    # -- the text ------------------------------------------------------------------------------

    @property
    def condition_keys(self) -> tuple[str, ...]:
        return self.text.condition_keys

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        """The text stack's encoding, floating tensors in the denoiser's dtype, on its device."""
        device, dtype = self.device, self.dtype
        return self.text.encode_prompts(prompts).map(
            lambda t: t.to(device, dtype) if t.is_floating_point() else t.to(device)
        )

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning:
        """c_∅, ``count`` rows: the encoded negative prompt ("" by default), all zeros for "" where
        the text stack says so."""
        cond = self.encode_prompts([negative_prompt])
        if not negative_prompt and self.text.zeros_for_empty:
            cond = cond.map(torch.zeros_like)
        return cond.repeat_rows(count)

    def token_positions(self, prompt: str) -> list[int]:
        return self.text.token_positions(prompt)

    # -- pixels --------------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [−1, 1] → latents (B, C, h, w), fp32, on the denoiser's device."""
        return self.autoencoder.encode(pixels).to(self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents)

    def components(self) -> dict[str, Any]:
        """The networks of every part by component name (what fingerprints and memory plans see)."""
        return {**self.text.modules(), **self.denoiser.modules(), **self.autoencoder.modules()}


#: Hugging Face tokenizers set their padding and truncation on the shared backend for the length
#: of a call, so two threads tokenizing at once can get each other's (a caption padded to 5
#: tokens instead of 77, measured here: 7 in 3,000); every call of a family goes through
#: :func:`tokenize`.
_TOKENIZER_LOCK = threading.Lock()


def tokenize(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    """``tokenizer(*args, **kwargs)``, one call at a time in this process (see ``_TOKENIZER_LOCK``)."""
    with _TOKENIZER_LOCK:
        return tokenizer(*args, **kwargs)


def runs_on(module: Any) -> torch.device:
    """The device ``module`` computes on. Under a memory plan its parameters wait elsewhere: accelerate's
    offload hooks (``enable_model_cpu_offload``, ``cpu_offload_with_hook``) name their execution device,
    diffusers' group offloading its onload device; otherwise it is where its parameters are."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)  # as diffusers' pipelines read it
    if device is not None:
        return torch.device(device)
    from diffusers import ModelMixin

    # ModelMixin.device: the group-offload onload device, else the parameters' — for any module
    # (the text encoders are transformers models)
    return ModelMixin.device.fget(module)


#: Per-size caches of small device tensors (SDXL's time ids, FLUX's position ids) keep at most
#: this many sizes; a full cache is emptied before the next entry.
SIZE_CACHE = 16


def bound_cache(cache: dict[Any, Any]) -> None:
    """Empty ``cache`` when it holds :data:`SIZE_CACHE` entries (call before inserting one)."""
    if len(cache) >= SIZE_CACHE:
        cache.clear()


def fingerprint(modules: dict[str, Any]) -> str:
    """A short content hash of configs and a strided sample of every weight tensor.

    Tells apart checkpoints (and the dtype they run in) without reading every weight.
    """
    h = hashlib.sha256()
    for name in sorted(modules):
        module = modules[name]
        config = getattr(module, "config", None)
        if config is not None:
            cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            h.update(json.dumps(_jsonable(cfg), sort_keys=True).encode())
        if isinstance(module, torch.nn.Module):
            for pname, p in module.state_dict().items():
                flat = p.detach().reshape(-1)
                stride = max(1, flat.numel() // 64)
                h.update(pname.encode())
                h.update(str(p.dtype).encode())
                h.update(flat[::stride][:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): _jsonable(v)
            for k, v in value.items()
            if not str(k).startswith("_") and not str(k).endswith("_version")
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
