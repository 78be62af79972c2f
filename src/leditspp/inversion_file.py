"""The inversion file format: safetensors with JSON metadata and a content hash, written
atomically and read back only when every check passes (what :meth:`Inversion.save` and
:meth:`Inversion.load` of :mod:`leditspp.inversion` delegate to).

A file holds the five tensors of :data:`TENSORS` and metadata ``format``, ``format_version``,
``info`` (an :class:`InversionInfo` as JSON) and ``sha256``. Every file is checked alike whatever
version it states: a file of version 1 (written without a hash) cannot be told from a changed one,
so it is refused too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import LeditsError
from .files import atomic_write

FORMAT = "leditspp-inversion"
FORMAT_VERSION = 2  # 2: metadata carries "sha256", a content hash over the tensors and the metadata
TENSORS = ("noisy_latents", "denoised", "noise_maps", "timesteps", "source_latents")
STACKS = ("noisy_latents", "denoised", "noise_maps")  # (N, B, C, h, w) each
REMAKE = "re-run `leditspp invert` to make it again"


@dataclass(frozen=True)
class InversionInfo:
    """Everything about an inversion that is not a tensor (saved as JSON metadata)."""

    model: str  # fingerprint of the model's weights and configs
    family: str
    solver: str
    steps: int
    skip: float
    source_prompt: str
    source_guidance: float
    negative_prompt: str
    height: int
    width: int
    dtype: str
    version: str
    noise_shift: float = 0.0  # TurboEdit's shift of Eq. 6's times (0: none)
    noise_path: str = ""  # the model's noise path, e.g. "vp leading offset 1", "flow shift 3"
    source: str = ""  # what the model was loaded from: "demo", a hub id or a folder ("": not known)
    loras: str = ""  # the LoRAs applied, JSON [[source, scale], …] ("": none)
    base: str = ""  # a single-file model's base: a hub id or a folder ("": none, or not known)


def write(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: InversionInfo) -> Path:
    """Write an inversion's :data:`TENSORS` and ``info`` as safetensors with JSON metadata and a
    content hash; atomic (see :mod:`leditspp.files`)."""
    path = Path(path)
    tensors = {name: tensors[name].detach().cpu().contiguous() for name in TENSORS}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "info": json.dumps(asdict(info))}
    meta["sha256"] = content_hash(tensors, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], InversionInfo]:
    """The tensors and info of a file written by :func:`write`, refusing (:class:`LeditsError`)
    anything it cannot trust.

    Checked: the format marker and an integer ``format_version`` no newer than this one; the
    metadata's field types, ``steps``/``height``/``width`` positive integers; all five tensors
    present, fp32 (``timesteps`` float64, or int64/int32 as older versions wrote them), the
    three stacks one shape (N, B, C, h, w) with
    N = ``steps``, ``source_latents`` (B, C, h, w), ``timesteps`` (N,); ``height``/``width`` one
    whole multiple of h/w; the settings (solver, steps, skip, source guidance, noise shift) in the
    ranges :meth:`Editor.invert` accepts; every value finite; and the content hash over tensors and
    metadata, whatever the stated version, so a changed byte or an edited field is refused.
    """
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LeditsError(f"{path}: the inversion file is damaged ({exc}); {REMAKE}") from exc
    info = _parse_info(path, meta["info"])
    _check_settings(path, info)
    _check_tensors(path, tensors, info)
    if "sha256" not in meta:
        raise LeditsError(
            f"{path}: the file has no content hash (format_version {meta['format_version']}), so a changed "
            f"byte or setting in it cannot be detected; {REMAKE}"
        )
    if meta["sha256"] != content_hash(tensors, meta):
        raise LeditsError(f"{path}: the content hash does not match, so the file was changed or corrupted; {REMAKE}")
    return tensors, info


def content_hash(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, then the metadata but the hash."""
    digest = hashlib.sha256()
    for name in TENSORS:
        t = tensors[name].contiguous()
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    digest.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return digest.hexdigest()


def _parse_info(path: str | os.PathLike[str], text: str) -> InversionInfo:
    """The metadata's ``info`` JSON as an :class:`InversionInfo`, every field of its declared type."""
    kinds = {"str": str, "int": int, "float": (int, float)}
    try:
        info = InversionInfo(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise LeditsError(f"{path}: the inversion's metadata is unreadable ({exc}); {REMAKE}") from exc
    for f in fields(InversionInfo):
        v = getattr(info, f.name)
        bad = isinstance(v, bool) or not isinstance(v, kinds[str(f.type)])
        bad = bad or (isinstance(v, float) and not math.isfinite(v))
        if bad or (f.name in ("steps", "height", "width") and v < 1):
            want = "a positive integer" if f.name in ("steps", "height", "width") else f"a finite {f.type}"
            raise LeditsError(f"{path}: metadata field {f.name!r} must be {want}; got {v!r}; {REMAKE}")
    return info


def _check_settings(path: str | os.PathLike[str], info: InversionInfo) -> None:
    """The inversion's settings in the ranges :meth:`Editor.invert` accepts (its own checks)."""
    from .solvers import check_solver
    from .validation import check_invert_arguments

    try:
        check_solver(info.solver, info.steps, info.skip)
        check_invert_arguments(None, info.source_prompt, info.negative_prompt, info.source_guidance, info.noise_shift)
    except LeditsError as exc:
        raise LeditsError(f"{path}: the inversion's metadata is out of range ({exc}); {REMAKE}") from None


def _check_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: InversionInfo) -> None:
    """Presence, dtypes, shapes and finiteness of an inversion file's tensors (see :func:`read`)."""

    def refuse(problem: str) -> LeditsError:
        return LeditsError(f"{path}: {problem}; {REMAKE}")

    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise refuse(f"the inversion file lacks the tensor(s) {', '.join(missing)}")
    for name in TENSORS:
        dtype = str(tensors[name].dtype).removeprefix("torch.")
        want = ("float64", "int64", "int32") if name == "timesteps" else ("float32",)
        if dtype not in want:
            raise refuse(f"tensor {name} is {dtype}, not {' or '.join(want)}")
    shapes = {name: tuple(tensors[name].shape) for name in TENSORS}
    stack = shapes["noisy_latents"]
    if len(stack) != 5 or min(stack) < 1 or any(shapes[name] != stack for name in STACKS):
        got = ", ".join(f"{name} {shapes[name]}" for name in STACKS)
        raise refuse(f"noisy_latents, denoised and noise_maps must share one shape (N, B, C, h, w); got {got}")
    if shapes["source_latents"] != stack[1:]:
        raise refuse(
            f"source_latents has shape {shapes['source_latents']}; the noise maps need (B, C, h, w) = {stack[1:]}"
        )
    if shapes["timesteps"] != stack[:1] or stack[0] != info.steps:
        steps = f"timesteps {shapes['timesteps']} and noise maps for {stack[0]} steps"
        raise refuse(f"the metadata says {info.steps} steps, the tensors disagree ({steps})")
    h, w = stack[-2:]
    if info.height % h or info.width % w or info.height // h != info.width // w:
        raise refuse(
            f"the metadata says {info.height}×{info.width} pixels, the latents are {h}×{w}: not one scale factor"
        )
    for name in TENSORS:
        t = tensors[name]
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise refuse(f"tensor {name} holds {'NaN' if t.isnan().any() else 'infinite'} values")


def model_source(path: str | os.PathLike[str], key: str = "source") -> str | None:
    """What the inversion's model was loaded from (``key="source"``: a hub id, a folder, a file,
    ``"demo"``; ``"base"``: a single file's base; ``"loras"``: its LoRAs as
    :func:`leditspp.lora.describe` writes them), read from the metadata alone; None where the file
    does not say (or cannot be read: loading it says why)."""
    try:
        source = json.loads(read_metadata(path)["info"]).get(key)
    except (LeditsError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) and source else None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The JSON metadata of an inversion file, checked for the format marker and version."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise LeditsError(f"inversion file {str(path)!r} does not exist; create it with `leditspp invert`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise LeditsError(f"{path}: not a readable safetensors inversion file ({exc}); {REMAKE}") from exc
    if meta.get("format") != FORMAT or "info" not in meta:
        raise LeditsError(f"{path}: a safetensors file, but not a leditspp inversion; make one with `leditspp invert`")
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit() and int(version) >= 1):
        raise LeditsError(f"{path}: format_version must be a positive integer; got {version!r}; {REMAKE}")
    if int(version) > FORMAT_VERSION:
        raise LeditsError(
            f"{path}: written by a newer leditspp (format {version}; this one reads up to {FORMAT_VERSION}); "
            "upgrade leditspp or re-run `leditspp invert` with this one"
        )
    return meta
