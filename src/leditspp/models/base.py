"""What every model family provides to the one inversion loop and the one edit loop.

A family adapter turns text into :class:`Conditioning`, runs the denoiser on stacked rows, and
moves images in and out of latent space. Everything else (solver, guidance, masks) is shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class ModelAdapter(Protocol):
    """The seam between the loops and a model family (SD 1.x/2.x, SDXL, few-step distillations …).

    The loops see noise estimates, noise paths, conditionings and attention recorders — never a
    network. A family is a new file under ``models/`` that provides these.
    """

    family: str
    path: Path  # the noise levels and the spacing the solver tables are built from
    mask_level: int  # the attention mask M¹ is read at 1/2^mask_level of the latent resolution
    condition_keys: tuple[str, ...]  # the tensors of its Conditioning (see encode_prompts)

    def noise_path(self, height: int, width: int) -> Path:
        """The path for an ``height × width`` latent grid (FLUX's shift depends on the size)."""

    @property
    def device(self) -> torch.device:
        """The execution device: where the denoiser runs and the loops' tensors live (under a memory
        plan its parameters may wait elsewhere, see :mod:`leditspp.offload`)."""

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def size_multiple(self) -> int: ...

    def mask_grid(self, height: int, width: int) -> tuple[int, int]: ...

    def encode_prompts(self, prompts: list[str]) -> Conditioning: ...

    def unconditional(self, negative_prompt: str, count: int) -> Conditioning: ...

    def token_positions(self, prompt: str) -> list[int]: ...

    def estimate(self, latents: torch.Tensor, level: NoiseLevel, cond: Conditioning) -> torch.Tensor:
        """The estimate guidance acts on, (R, C, h, w) fp32: ε for DDPM-trained families, the
        velocity v for flow models."""

    def to_data(self, estimate: torch.Tensor, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """The data prediction x̂0 of a (guided) estimate at ``x``, (B, C, h, w)."""

    def row_bytes(self, height: int, width: int) -> int: ...

    def compile(self, **options: Any) -> None: ...

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionRecorder]: ...

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def components(self) -> dict[str, Any]: ...


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


def warn_if_truncated(tokenizer: Any, prompts: list[str], limit: int | None = None) -> None:
    """Log a warning for each prompt longer than the text encoder's window (``limit``, default
    the tokenizer's ``model_max_length``): it is cut there."""
    limit = limit or tokenizer.model_max_length
    for prompt in prompts:
        count = len(tokenize(tokenizer, prompt, truncation=False, verbose=False).input_ids)
        if count > limit:
            logger.warning(
                "prompt %r has %d tokens; the text encoder reads only the first %d (the rest is ignored) — shorten it",
                prompt if len(prompt) <= 60 else prompt[:57] + "…",
                count,
                limit,
            )


@torch.no_grad()
def encode_text(
    tokenizer: Any, encoder: Any, prompts: list[str], max_length: int | None = None, *, all_layers: bool = True
) -> Any:
    """One text encoder's output for ``prompts`` padded to ``max_length`` (default the
    tokenizer's window). With ``all_layers``, ``out.hidden_states[-2]`` (n, L, D) is the
    penultimate layer SDXL and SD3 condition on; ``out[0]`` is a CLIP's projected embedding
    (``out.pooler_output`` its pooled one) or T5's last hidden states."""
    ids = tokenize(
        tokenizer,
        prompts,
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return encoder(ids.to(runs_on(encoder)), output_hidden_states=all_layers)


def vae_scale_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


#: Per-size caches of small device tensors (SDXL's time ids, FLUX's position ids) keep at most
#: this many sizes; a full cache is emptied before the next entry.
SIZE_CACHE = 16


def bound_cache(cache: dict[Any, Any]) -> None:
    """Empty ``cache`` when it holds :data:`SIZE_CACHE` entries (call before inserting one)."""
    if len(cache) >= SIZE_CACHE:
        cache.clear()


_vae_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_vae_locks_guard = threading.Lock()


def _vae_lock(vae: Any) -> threading.RLock:
    """The lock of one VAE: callers of the same VAE wait for each other, other models' VAEs don't."""
    with _vae_locks_guard:
        lock = _vae_locks.get(vae)
        if lock is None:
            lock = _vae_locks[vae] = threading.RLock()
        return lock


@contextlib.contextmanager
def _vae_precision(vae: Any) -> Iterator[torch.dtype]:
    """Run the VAE in fp32 when it is fp16 and its config asks for ``force_upcast``; restore after.

    Holds the VAE's own lock for the whole call, so concurrent callers never see it mid-cast."""
    with _vae_lock(vae):
        dtype = vae.dtype
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(torch.float32)
        try:
            yield torch.float32 if upcast else dtype
        finally:
            if upcast:
                vae.to(dtype)


@torch.no_grad()
def encode_pixels(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [−1, 1] → scaled posterior-mean latents (B, C, H/f, W/f), fp32."""
    with _vae_precision(vae) as dtype:
        dist = vae.encode(pixels.to(runs_on(vae), dtype)).latent_dist
        latents = dist.mode().float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, h, w) → images (B, 3, H, W) in [−1, 1], fp32."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with _vae_precision(vae) as dtype:
        z = (latents / vae.config.scaling_factor + shift).to(runs_on(vae), dtype)
        return vae.decode(z).sample.float().clamp(-1, 1)


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
