"""Inversion and edit on ComfyUI's objects: leditspp's loops, fed by the ComfyUI parts.

The loops run in the model's latent space (``BaseModel.process_latent_in`` of what the VAE
encodes); ComfyUI's scaling does not round-trip bit for bit, so an edit hands back the user's own
``LATENT`` wherever its latents equal the source ``x0`` and ``process_latent_out`` of the rest.
With no concept (or outside ``preserve``'s region) the output is therefore the ``VAEEncode``
latent exactly (paper §3.1's exact reconstruction, on ComfyUI's latent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import comfy.model_management
import comfy.utils
import torch
import torch.nn.functional as F

import leditspp
from leditspp.editing import ConceptBatch, EditSettings, Progress, edit_loop
from leditspp.edits import Edit, check_warmup
from leditspp.errors import LeditsError
from leditspp.inversion import Inversion, invert_latents
from leditspp.inversion_file import InversionInfo
from leditspp.masking import MASK_MODES, check_preserve, needs_attention, resize_user_mask
from leditspp.memory import edit_groups, inversion_chunk
from leditspp.models.base import Conditioning, ModelAdapter
from leditspp.solvers import StepTable, check_solver, step_table
from leditspp.validation import check_seed

from . import text
from .denoiser import model_name


@dataclass(frozen=True)
class ComfyInversion:
    """``LEDITS_INVERSION``: an inverted batch and what its edits need. Never changed after it is
    made (ComfyUI hands one cached output to every later prompt)."""

    inversion: Inversion  # the loops' value, on the CPU
    latent: torch.Tensor  # (B, C, h, w) or (B, C, 1, h, w): the VAE's latent, as ComfyUI's VAEEncode gives it
    base: tuple[Conditioning, ...]  # c_∅ and, with a source prompt, c_src: one row each


@dataclass(frozen=True)
class Concept:
    """One ``LeditsConcept``: the edit (with its conditioning) and its word tokens' positions."""

    edit: Edit
    positions: tuple[int, ...]


def progress_bar(total: int) -> Progress:
    """A leditspp progress callback that advances ComfyUI's progress bar and stops the run when the
    user presses Cancel."""
    bar = comfy.utils.ProgressBar(total)

    def tell(stage: str, done: int, steps: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, steps)

    return tell


def check_size(height: int, width: int, multiple: int) -> None:
    if height % multiple or width % multiple:
        raise LeditsError(
            f"the image is {width}×{height}; LEDITS++ needs sides that are multiples of {multiple} (the VAE's "
            "factor times the attention grid's) — scale or crop it first, e.g. to "
            f"{width // multiple * multiple}×{height // multiple * multiple} (ImageScale, ImageCrop)"
        )


@torch.no_grad()
def invert(
    model: ModelAdapter,
    image: torch.Tensor,
    base: Sequence[Conditioning],
    *,
    steps: int,
    skip: float,
    seed: int,
    solver: str,
    source_guidance: float,
    source_prompt: str = "",
) -> ComfyInversion:
    """Invert ``image`` (B, H, W, C) in [0, 1] (paper Eqs. 6–7) with ``model`` (its VAE connected). ``base``:
    ``[c_∅]`` or ``[c_∅, c_src]``;
    ``source_prompt`` names c_src in the inversion's info."""
    check_solver(solver, steps, skip)
    generator = torch.Generator("cpu").manual_seed(check_seed(seed))
    batch, height, width, _ = image.shape
    check_size(height, width, model.size_multiple)
    latent = model.autoencoder.latent(image[..., :3])
    x0 = model.denoiser.latent_in(latent).to(model.device)
    path = model.noise_path(*x0.shape[-2:])
    table = step_table(solver, path, steps, skip)
    rows = len(base) * batch
    chunk = inversion_chunk(model, steps, rows, *x0.shape[-2:])
    model.denoiser.load(tuple(x0.shape), rows * chunk)
    on_device = [c.map(lambda t: t.to(model.device)) for c in fit_lengths(model, base)]
    ys, denoised, zs = invert_latents(
        model, x0, table, on_device, float(source_guidance), generator, chunk, None, progress_bar(steps)
    )
    info = InversionInfo(
        model=f"comfyui:{model_name(model.denoiser.patcher)}",
        family=model.family,
        solver=solver,
        steps=steps,
        skip=float(skip),
        source_prompt=source_prompt,
        source_guidance=float(source_guidance),
        negative_prompt="",
        height=height,
        width=width,
        dtype=str(model.dtype).removeprefix("torch."),
        version=leditspp.__version__,
        noise_path=path.describe(),
    )
    inversion = Inversion(ys, denoised, zs, table.timesteps.clone(), x0, info).to("cpu")
    return ComfyInversion(inversion, latent.clone(), tuple(c.map(lambda t: t.cpu()) for c in base))


def check_inversion(model: ModelAdapter, inv: ComfyInversion) -> StepTable:
    """The solver table to replay ``inv`` with on this model, refused for another family's schedule."""
    info = inv.inversion.info
    if info.family != model.family:
        raise LeditsError(
            f"this inversion was made with a {info.family} model; the model connected to the edit is "
            f"{model.family} — connect the same model to LeditsInvert and LeditsEdit"
        )
    table = step_table(info.solver, model.noise_path(info.height, info.width), info.steps, info.skip)
    if not torch.equal(table.timesteps, inv.inversion.timesteps.double()):
        raise LeditsError(
            "this inversion's timesteps do not match the connected model's noise schedule; connect the "
            "model the image was inverted with, or invert it again"
        )
    return table


def fit_lengths(model: ModelAdapter, conds: Sequence[Conditioning]) -> list[Conditioning]:
    """``conds`` brought to one token count so that one call stacks them: padded and masked where the
    family's prompts keep their own counts (Chroma, Qwen-Image; :func:`.text.pad_to_common_length`),
    else repeated (:func:`.text.to_common_length`). A joint attention without a text mask (FLUX.1,
    SD3) would weigh repeated text keys against the image's, so there the counts must already be equal."""
    if model.denoiser.text_mask:
        return text.pad_to_common_length(conds)
    lengths = sorted({c.embeds.shape[1] for c in conds})
    if model.denoiser.flow and len(lengths) > 1:
        raise LeditsError(
            f"the prompts have {lengths} text tokens; on FLUX.1 and SD3 they must have the same count — shorten the "
            f"longer ones to under {lengths[0]} tokens"
        )
    return text.to_common_length(conds)


def concept_batch(
    model: ModelAdapter, base: Sequence[Conditioning], concepts: Sequence[Concept]
) -> tuple[list[Conditioning], ConceptBatch]:
    """The base conditions and the concepts as the edit loop takes them, every conditioning
    brought to one token count (:func:`fit_lengths`), on the model's device."""
    device = model.device
    edits = tuple(k.edit for k in concepts)
    fitted = fit_lengths(model, [*base, *(e.conditioning for e in edits)])
    length = fitted[0].embeds.shape[1]
    # a repeated conditioning holds its tokens once per copy, a padded one once
    own = [length if model.denoiser.text_mask else e.conditioning.embeds.shape[1] for e in edits]
    rows = fitted[len(base) :]
    cond = Conditioning.cat(rows) if rows else fitted[0].map(lambda t: t[:0])
    weights = text.token_weights([k.positions for k in concepts], own, length)
    per_concept = torch.tensor([[e.direction, e.scale, e.threshold] for e in edits]).reshape(-1, 3)
    batch = ConceptBatch(
        edits=edits,
        cond=cond.map(lambda t: t.to(device)),
        token_weights=weights.to(device),
        directions=per_concept[:, 0].to(device),
        scales=per_concept[:, 1].to(device),
        thresholds=per_concept[:, 2].to(device),
    )
    return [c.map(lambda t: t.to(device)) for c in fitted[: len(base)]], batch


@torch.no_grad()
def edit(
    model: ModelAdapter,
    inv: ComfyInversion,
    concepts: Sequence[Concept],
    *,
    mask_mode: str,
    user_mask: torch.Tensor | None,
    preserve: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edit ``inv`` with ``concepts`` (paper Eqs. 8–14). Returns the ``LATENT`` samples (shaped as the VAE's)
    and each concept's mask averaged over its steps, (E·B, H, W) at the image's size (concept-major;
    one zero mask per image without concepts)."""
    if mask_mode not in MASK_MODES:
        raise LeditsError(f"mask mode must be one of {MASK_MODES}; got {mask_mode!r}")
    preserve = check_preserve(preserve, mask_mode)
    table = check_inversion(model, inv)
    check_warmup([k.edit for k in concepts], len(table))
    source = inv.inversion.to(model.device)
    batch, _, h, w = source.latents.shape
    base, batch_concepts = concept_batch(model, inv.base, concepts)
    mask = None
    if user_mask is not None:
        mask = resize_user_mask(user_mask, (h, w)).to(model.device)
        if mask.shape[0] not in (1, batch):
            raise LeditsError(f"the mask has {mask.shape[0]} masks for {batch} images; give 1 or {batch}")
    groups = edit_groups(model, batch, h, w)
    model.denoiser.load(tuple(source.latents.shape), batch * min(groups, len(base) + len(concepts)))
    use_attention = bool(concepts) and needs_attention(mask_mode)
    with model.capture_attention() if use_attention else contextlib.nullcontext() as recorder:
        settings = EditSettings(mask_mode, mask, preserve=preserve, groups_per_call=groups)
        latents, _, means, _ = edit_loop(
            model, source, table, base, batch_concepts, settings, recorder, progress_bar(len(table))
        )
    return output_latent(model, inv, latents), pixel_masks(means, inv)


def output_latent(model: ModelAdapter, inv: ComfyInversion, latents: torch.Tensor) -> torch.Tensor:
    """The edit's ``LATENT`` samples (shaped as the VAE's): the user's latent where the edit left the source
    ``x0`` as it was, ``process_latent_out`` of the edited latents elsewhere."""
    latents = latents.cpu()
    edited = model.denoiser.latent_out(latents, inv.latent)
    kept = (latents == inv.inversion.source_latents).reshape(inv.latent.shape)
    return torch.where(kept, inv.latent, edited)


def pixel_masks(means: torch.Tensor, inv: ComfyInversion) -> torch.Tensor:
    """Concept masks (E, B, h, w) → ComfyUI ``MASK`` (E·B, H, W) at the image's size (nearest)."""
    info = inv.inversion.info
    if means.shape[0] == 0:
        return torch.zeros(inv.latent.shape[0], info.height, info.width)
    return F.interpolate(means.cpu().flatten(0, 1)[:, None], size=(info.height, info.width), mode="nearest")[:, 0]
