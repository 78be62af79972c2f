"""The façade: load a model, invert images, edit inversions. Wiring only; the math lives elsewhere.

An :class:`Editor` holds model components and nothing about any request, so one editor serves
many images; inversions and results are plain values.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import __version__, defaults
from .compiling import compile_options
from .divergence import check_edited, check_finite, single_colour
from .editing import ConceptBatch, EditSettings, Progress, edit_loop
from .edits import Edit, as_edits, check_warmup
from .errors import LeditsError
from .inversion import Inversion, invert_latents, noising_levels
from .inversion_file import InversionInfo
from .io import ImageInput, as_pixel_batch, centre_crop, load_mask, resize_pixels, target_size, to_pil
from .lora import Lora, apply_loras, describe, parse_recorded, with_loras
from .masking import MASK_MODES, check_preserve, keep_outside, needs_attention, resize_user_mask
from .memory import edit_groups, inversion_chunk
from .models import (
    FEW_STEP_RECOMMENDED,
    RECOMMENDABLE,
    Conditioning,
    ModelAdapter,
    adapter_from_components,
    fingerprint,
    load_pipeline,
    model_settings,
    source_name,
)
from .models.families import check_size, parts_of, recommended_of
from .models.settings import MODEL_SETTINGS_FILE
from .offload import DENOISERS, MemoryPlan, apply_plan, as_plan, encoders_leave, moves_weights, resolve
from .solvers import SOLVERS, StepTable, check_solver, step_table
from .validation import check_device, check_invert_arguments, check_seed, default_dtype

logger = logging.getLogger("leditspp")
#: The diffusers schedulers whose update rule a solver is (dpmsolver++, ddpm, lcm; flow matching's
#: Euler); others lend only their noise schedule and timestep spacing.
SOLVER_SCHEDULERS = frozenset(
    {"DPMSolverMultistepScheduler", "DDPMScheduler", "LCMScheduler", "FlowMatchEulerDiscreteScheduler"}
)


@dataclass(frozen=True)
class EditResult:
    """The outcome of :meth:`Editor.edit`.

    ``images``: edited PIL images (empty with ``decode=False``); ``latents``: (B, C, h, w) fp32
    before decoding; ``masks``: (E, B, h, w) the last mask each concept used; ``mask_means``:
    (E, B, h, w) each concept's mask averaged over the steps it acted (where it edited, and how
    often); ``region``: with ``preserve``, (B, 1, h, w) the cells the edit could change (outside
    them the latents and the image's pixels are the source's), else None.
    """

    images: list[Image.Image]
    latents: torch.Tensor
    masks: torch.Tensor
    edits: tuple[Edit, ...]
    mask_means: torch.Tensor
    region: torch.Tensor | None = None


class Editor:
    """LEDITS++ on a diffusers model: ``invert`` once, then ``edit`` as often as you like."""

    def __init__(
        self, model: ModelAdapter, recommended: dict[str, Any] | None = None, plan: MemoryPlan | None = None
    ) -> None:
        self.model = model
        #: The memory plan the components were placed by (``offload=`` of :meth:`from_pretrained`
        #: and :meth:`from_pipe`, ``auto`` resolved; see :mod:`leditspp.offload`).
        self.plan = plan or MemoryPlan("none")
        self._base_fingerprint = fingerprint(model.components())
        self.fingerprint = self._base_fingerprint
        #: The LoRAs applied (:meth:`load_lora`), in order; they are part of the fingerprint.
        self.loras: tuple[Lora, ...] = ()
        #: The diffusers pipeline the components came from, where there was one (for its LoRA loader).
        self.pipeline: Any = None
        #: What the model was loaded from — ``"demo"``, a hub id or a folder (absolute) — recorded in
        #: inversions so that an edit can name the model to load; "" where not known.
        self.source = ""
        #: A single-file model's base (:meth:`from_pretrained`'s ``base=``), recorded beside the
        #: source; "" where there is none.
        self.base = ""
        #: The settings this model recommends (``recommended``: its folder's ``leditspp.json``,
        #: its checkpoint's and its family's, see :func:`~leditspp.models.model_settings`), the
        #: project's defaults where it names none: what the CLI and the web UI default to for it.
        #: A few-step model (trailing or LCM spacing) recommends 4 steps, no skip and its solver.
        few_step = FEW_STEP_RECOMMENDED.get(model.path.spacing, {})
        self.recommended = {**RECOMMENDABLE, **few_step, **(recommended or {})}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model: str = defaults.MODEL,
        *,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        spacing: str | None = None,
        offload: str | MemoryPlan = defaults.OFFLOAD,
        base: str | None = None,
        loras: Sequence[str | tuple[str, float]] = (),
    ) -> Editor:
        """Load ``"demo"`` (the built-in shapes-world model, offline), a hub id, a local diffusers
        folder or a single-file checkpoint (``.safetensors``/``.ckpt``: SD 1.x/2.x, SDXL, SD3/3.5,
        FLUX.1, Chroma, Z-Image; its family told from its keys).

        ``base``: for a single file, the model (hub id or diffusers folder) whose configs and
        components the file lacks — text encoders, tokenizers, the scheduler, or all but the
        transformer. ``loras``: LoRAs applied once loaded, each ``"PATH"``, ``"PATH:SCALE"`` or
        ``(PATH, SCALE)`` (see :meth:`load_lora`).

        ``device`` defaults to CUDA when available, else CPU; ``torch_dtype`` to fp16 on CUDA and
        fp32 on the CPU. Solver arithmetic and stored inversions are fp32 regardless (SPEC A5).
        ``spacing``: see :meth:`from_pipe`. ``offload``: the memory plan, ``"none"``, ``"model"``,
        ``"group"`` or ``"auto"`` (default: the lightest that fits the device's free memory), or a
        :class:`~leditspp.offload.MemoryPlan` with extras (fp8 weights, VAE tiling); see
        :mod:`leditspp.offload`. ``Editor.plan`` reports the plan applied.
        """
        device = check_device(device)
        plan = as_plan(offload)  # refused before anything loads
        if torch_dtype is None:
            torch_dtype = default_dtype(device)
        settings = model_settings(model)
        if spacing is not None:
            settings["spacing"] = spacing
        lora_list = tuple(Lora.parse(lora) for lora in loras)  # refused before anything loads
        pipe = load_pipeline(model, torch_dtype, base)
        editor = cls.from_pipe(pipe, offload=plan, device=device, **settings)
        editor.source = source_name(model)
        editor.base = "" if base is None else source_name(base)
        for lora in lora_list:
            editor.load_lora(lora.source, scale=lora.scale)
        return editor

    @classmethod
    def from_pipe(
        cls,
        pipe: Any,
        *,
        mask_level: int | None = None,
        spacing: str | None = None,
        recommended: dict[str, Any] | None = None,
        offload: str | MemoryPlan = defaults.OFFLOAD,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> Editor:
        """Reuse the components of a loaded diffusers pipeline (any family of
        :data:`leditspp.models.FAMILIES`, or the LEdits++ port's).

        Family options, each refused by a family that cannot use it: ``mask_level`` (UNets: the
        cross-attention level M¹ is read at, 1/2^level of the latents, the paper's ¼ by default;
        flow transformers read it on their patch grid and refuse the option);
        ``spacing`` (DDPM-trained models: ``leading``, ``trailing``, ``linspace``, ``lcm``; default:
        what the scheduler config declares — ``trailing`` for Turbo/Lightning, ``lcm`` for an
        ``LCMScheduler``, else the port's ``leading``); ``max_sequence_length`` (flow
        transformers: text tokens). ``recommended``: the model's preferred settings (see
        ``Editor.recommended``).

        ``offload``: the memory plan (see :meth:`from_pretrained`), applied in place to the pipeline's
        components with ``device`` the execution device (default: where the denoiser runs now, so
        ``auto`` keeps a pipeline on the CPU there). Components that carry their own offload hooks
        (``pipe.enable_model_cpu_offload()``) are kept as they are under ``auto`` and ``none``.

        A pipeline loaded from a local folder brings that folder's ``leditspp.json`` (options and
        recommended settings; arguments given here win). The pipeline's scheduler lends its noise
        schedule and timestep spacing; the update rule is the ``solver=`` of :meth:`invert`.
        """
        components = dict(getattr(pipe, "components", pipe))
        config = getattr(pipe, "config", None)
        declared = _folder_settings(pipe)
        recommended = declared.pop("recommended", {}) | (recommended or {})
        given = {"mask_level": mask_level, "spacing": spacing, **options}
        given = declared | {k: v for k, v in given.items() if v is not None}
        pipeline_config = dict(config) if hasattr(config, "keys") else {}
        adapter = adapter_from_components(components, pipeline_config, **given)
        device = adapter.device if device is None else check_device(device)
        plan = resolve(as_plan(offload), components, device)
        apply_plan(plan, components, device)
        implied = recommended_of(parts_of(components), pipeline_config)  # e.g. a distilled [klein]'s
        _say_scheduler(components.get("scheduler"))
        editor = cls(adapter, implied | recommended, plan)
        editor.pipeline = pipe if hasattr(pipe, "components") else None
        return editor

    def load_lora(self, lora: str, *, scale: float = 1.0) -> Editor:
        """Apply a LoRA — a ``.safetensors`` file, a folder holding one, or a hub id — with weight
        ``scale``, through the pipeline's diffusers LoRA loader (``load_lora_weights``; every
        family's pipeline has one). LoRAs add up in the order loaded. They change the model, so
        they change :attr:`fingerprint`: an inversion made without them (or with others) is
        refused, and inversions record them (source and scale). Returns the editor."""
        new = Lora.of(lora, scale)
        if self.pipeline is None:
            raise LeditsError(
                "LoRAs need the diffusers pipeline: make the editor with from_pretrained or from_pipe(pipe)"
            )
        apply_loras(self.pipeline, self.loras, (new,))
        self.loras = (*self.loras, new)
        self.fingerprint = with_loras(self._base_fingerprint, self.loras)
        return self

    def compile(self, **options: Any) -> Editor:
        """Opt in to ``torch.compile`` of the denoising network, UNet or transformer (in place;
        ``options`` go to ``torch.compile``, e.g. ``mode="max-autotune"``). Returns the editor.

        On a CUDA device the default is CUDA graphs (``mode="reduce-overhead"``, one static graph
        per call shape: :mod:`leditspp.compiling`), refused under the group-offload plan, whose
        weights move; elsewhere torch.compile's default mode. Timesteps enter the network as
        tensors and every step of an edit has the same rows, so a graph is compiled per distinct
        call shape (inversion chunk, number of active concepts, attention capture on or off) —
        never per step. The first call of each shape pays the compile time. Reconstruction stays
        exact: it never depends on the network's arithmetic.
        """
        denoiser = next(m for name, m in self.model.components().items() if name in DENOISERS)
        moves = self.plan.offload == "group" or moves_weights(denoiser)
        self.model.compile(**compile_options(self.device, moves, options))
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the autoencoder's factor times 2^mask_level, so
        that the latents cover whole cells of the attention mask's grid (whole tokens of a
        transformer's patches)."""
        return self.model.size_multiple

    # -- inversion ----------------------------------------------------------------------------

    @torch.no_grad()
    def invert(
        self,
        images: ImageInput,
        *,
        steps: int = defaults.STEPS,
        skip: float = defaults.SKIP,
        source_prompt: str = "",
        source_guidance: float = defaults.SOURCE_GUIDANCE,
        negative_prompt: str = "",
        solver: str = defaults.SOLVER,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        height: int | None = None,
        width: int | None = None,
        inversion_batch: int | None = None,
        max_pixels: int | None = defaults.MAX_PIXELS,
        noise_shift: float = 0.0,
        progress: Progress | None = None,
    ) -> Inversion:
        """Invert one image or a batch (a list) exactly; returns an :class:`Inversion`.

        Images are processed at their size rounded down to :attr:`size_multiple` unless
        ``height``/``width`` are given. ``seed=k`` is a CPU generator seeded with ``k`` (the same
        auxiliary noises as diffusers' port with that generator); with neither ``seed`` nor
        ``generator``, the seed is ``defaults.SEED`` (as in the CLI and the web UI).
        ``inversion_batch`` is the number of steps per network call (the calls are independent;
        default: as many as fit half the free memory, at most 8 rows per call on the CPU; see
        :mod:`leditspp.memory`). ``max_pixels`` caps height × width of the processed images
        (None: no cap). ``noise_shift`` δ ∈ [0, 1]: TurboEdit's shift for few-step models, Eq. 6
        noises at ``t_j − δ·(t_0 − t_1)`` (see :func:`leditspp.inversion.noising_levels`).
        A model made for one size (DeepFloyd IF's stage I: 64², the default ``height``/``width``
        there) gets each image centre-cropped to the processing size's aspect first, never stretched.
        """
        generator = _generator(seed, generator)
        check_invert_arguments(inversion_batch, source_prompt, negative_prompt, source_guidance, noise_shift)
        check_solver(solver, steps, skip)  # before the VAE runs; the table needs the latent size
        pixels = as_pixel_batch(images)
        native = getattr(self.model, "native_size", None)  # a model made for one size (DeepFloyd IF: 64²)
        if native is not None:
            height, width = height or native[0], width or native[1]
            pixels = [centre_crop(p, (height, width)) for p in pixels]
        size = target_size(pixels, height, width, self.size_multiple, max_pixels)
        check_size(self.model, *size)
        x0 = self.model.encode(resize_pixels(pixels, size) * 2 - 1)
        path = self.model.noise_path(*x0.shape[-2:])
        table = step_table(solver, path, steps, skip)
        with self._text_encoding():
            base = self._base_conditions(source_prompt, negative_prompt, x0.shape[0])
        chunk = inversion_batch or inversion_chunk(self.model, steps, len(base) * x0.shape[0], *x0.shape[-2:])
        noising = noising_levels(path, table, float(noise_shift))
        ys, denoised, zs = invert_latents(
            self.model, x0, table, base, float(source_guidance), generator, chunk, noising, progress
        )
        fix = f"its noise maps cannot be replayed; lower the source guidance ({source_guidance})"
        check_finite(zs, "inversion", fix)
        info = InversionInfo(
            model=self.fingerprint,
            family=self.model.family,
            solver=solver,
            steps=steps,
            skip=float(skip),
            source_prompt=source_prompt,
            source_guidance=float(source_guidance),
            negative_prompt=negative_prompt,
            height=size[0],
            width=size[1],
            dtype=self._dtype_name,
            version=__version__,
            noise_shift=float(noise_shift),
            noise_path=path.describe(),
            source=self.source,
            loras=describe(self.loras),
            base=self.base,
        )
        return Inversion(ys, denoised, zs, table.timesteps.clone(), x0, info)

    # -- editing ------------------------------------------------------------------------------

    @torch.no_grad()
    def edit(
        self,
        inversion: Inversion,
        edits: Edit | str | list[Edit | str] | tuple[Edit | str, ...] | None = None,
        *,
        mask_mode: str = defaults.MASK_MODE,
        user_mask: Any = None,
        guidance_rescale: float = defaults.GUIDANCE_RESCALE,
        preserve: int | None = None,
        decode: bool = True,
        progress: Progress | None = None,
    ) -> EditResult:
        """Apply every edit at once to an inversion. No edits reproduce the input exactly.

        ``mask_mode``: ``intersect`` (M¹⊙M², default), ``attention`` (M¹), ``noise`` (M²) or
        ``none``. ``user_mask``: any size, 1 where edits may act; resized to the latent grid.
        ``preserve=k`` (opt-in; None: off): keep the source outside the region R the concepts'
        masks covered at any step, dilated by ``k`` latent cells — the latents follow the source
        trajectory there after every step, and the decoded image takes the decoded input's pixels
        there (``EditResult.region`` is R). It pays where masks are good; see the README.
        """
        if not isinstance(inversion, Inversion):
            raise LeditsError(
                f"edit() needs an Inversion from Editor.invert or Inversion.load; got {type(inversion).__name__}"
            )
        edits = as_edits(edits)
        if mask_mode not in MASK_MODES:
            raise LeditsError(f"mask_mode must be one of {MASK_MODES}; got {mask_mode!r}")
        if not (isinstance(guidance_rescale, (int, float)) and 0.0 <= guidance_rescale <= 1.0):
            raise LeditsError(f"guidance_rescale must be in [0, 1]; got {guidance_rescale!r}")
        preserve = check_preserve(preserve, mask_mode)
        table = self._check_inversion(inversion)
        check_warmup(edits, len(table))
        inv = inversion.to(self.device)
        info = inv.info
        batch, _, h, w = inv.latents.shape
        use_attention = bool(edits) and needs_attention(mask_mode)
        with self._text_encoding():
            base = self._base_conditions(info.source_prompt, info.negative_prompt, batch)
            concepts = self._concepts(edits, use_attention)
        mask = None
        if user_mask is not None:
            mask = resize_user_mask(load_mask(user_mask), (h, w)).to(self.device)
            if mask.shape[0] not in (1, batch):
                raise LeditsError(f"user_mask has {mask.shape[0]} masks for {batch} images; give 1 or {batch}")
        groups = edit_groups(self.model, batch, h, w)
        settings = EditSettings(mask_mode, mask, float(guidance_rescale), preserve=preserve, groups_per_call=groups)
        capture = self.model.capture_attention() if use_attention else contextlib.nullcontext()
        with capture as recorder:
            latents, masks, mask_means, region = edit_loop(
                self.model, inv, table, base, concepts, settings, recorder, progress
            )
        images: list[Image.Image] = []
        if decode and region is None:
            images = self.decode(latents)
        elif decode:  # the decoder mixes cells: outside R, the decoded input's pixels
            images = to_pil(keep_outside(region, self.model.decode(latents), self.model.decode(inv.source_latents)))
        self._check_result(latents, images, inv)
        return EditResult(images, latents, masks, edits, mask_means, region)

    def _check_result(self, latents: torch.Tensor, images: list[Image.Image], inv: Inversion) -> None:
        """Refuse a diverged edit (:func:`~leditspp.divergence.check_edited`): NaN / inf latents, or
        an image of one colour whose input (decoded only then) has several."""
        check_finite(latents, "edit", "no image can be read from its latents; lower the edit scale")
        for k, image in enumerate(images):
            if single_colour(image) is not None:
                check_edited(latents[k : k + 1], image, self.decode(inv.source_latents[k : k + 1])[0])

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents (B, C, h, w) → PIL images through the model's decoder (a VAE; DeepFloyd IF: its
        stage I pixels as they are, or its stage II upscaler)."""
        return to_pil(self.model.decode(latents))

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _dtype_name(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    def _text_encoding(self) -> contextlib.AbstractContextManager[None]:
        """The block text is encoded in: encoders that visited the device for it leave at its end."""
        return encoders_leave(self.model.components())

    def _on_device(self, cond: Conditioning) -> Conditioning:
        """Embeddings where the denoiser runs (an encoder may run elsewhere under a memory plan)."""
        return cond.map(lambda t: t.to(self.device))

    def _base_conditions(self, source_prompt: str, negative_prompt: str, batch: int) -> list[Conditioning]:
        """``[c_∅]`` or ``[c_∅, c_src]``, ``batch`` rows each: the same in inversion and editing."""
        base = [self._on_device(self.model.unconditional(negative_prompt, batch))]
        if source_prompt:
            base.append(self._on_device(self.model.encode_prompts([source_prompt])).repeat_rows(batch))
        return base

    def _concepts(self, edits: tuple[Edit, ...], use_attention: bool) -> ConceptBatch:
        device = self.device
        texts = [e.prompt for e in edits if e.conditioning is None]
        encoded = self._on_device(self.model.encode_prompts(texts)) if texts else None
        rows, j = [], 0
        for e in edits:
            if e.conditioning is None:
                rows.append(encoded.row(j))
                j += 1
            else:
                rows.append(self._given_conditioning(e))
        length = rows[0].embeds.shape[1] if rows else 1
        weights = torch.zeros(len(edits), length, device=device)
        for i, e in enumerate(edits):
            if rows[i].embeds.shape[1] != length:
                raise LeditsError(
                    f"the conditioning of {e.prompt!r} has {rows[i].embeds.shape[1]} tokens; expected {length}"
                )
            if not use_attention:
                continue
            if not e.prompt:
                raise LeditsError(
                    "the attention mask needs each concept's tokens: give prompt= alongside conditioning= "
                    "(used only for finding its tokens), or use mask_mode='noise'"
                )
            positions = [p for p in self.model.token_positions(e.prompt) if p < length]
            if not positions:
                raise LeditsError(f"edit prompt {e.prompt!r} has no word tokens for the attention mask")
            weights[i, positions] = 1.0
        cond = Conditioning.cat(rows) if rows else Conditioning.of(torch.zeros(0, 1, 1, device=device))
        per_concept = torch.tensor(
            [[e.direction, e.scale, e.threshold] for e in edits], dtype=torch.float32, device=device
        ).reshape(-1, 3)
        return ConceptBatch(
            edits=edits,
            cond=cond,
            token_weights=weights,
            directions=per_concept[:, 0],
            scales=per_concept[:, 1],
            thresholds=per_concept[:, 2],
        )

    def _given_conditioning(self, e: Edit) -> Conditioning:
        """An edit's own conditioning on the model's device and dtype, checked against the family."""
        given = e.conditioning
        assert given is not None
        want = tuple(sorted(self.model.condition_keys))
        if given.keys != want:
            raise LeditsError(
                f"the conditioning of {e.prompt!r} has the tensors {list(given.keys)}; {self.model.family} "
                f"needs {list(want)} — make it with editor.model.encode_prompts([...]).row(0)"
            )
        return given.map(lambda t: t.to(self.device, self.model.dtype if t.is_floating_point() else t.dtype))

    def _check_inversion(self, inversion: Inversion) -> StepTable:
        """Refuse inversions of another model or schedule; return the solver table to replay."""
        info = inversion.info
        recorded = parse_recorded(info.loras)
        if info.model != self.fingerprint and recorded != self.loras:
            flags = " ".join(f"--lora {lora}" for lora in recorded) or "no --lora"
            raise LeditsError(
                f"this inversion was made with the LoRAs {_names(recorded)}; this editor has {_names(self.loras)}. "
                f"Edit it with {flags} (load_lora / loras=), or invert the image again with this editor"
            )
        if info.model != self.fingerprint:
            made_with = f"{info.source}: " if info.source else ""
            fix = f"Edit it with --model {info.source}, or invert" if info.source else "Invert"
            raise LeditsError(
                f"this inversion was made with another model ({made_with}{info.family}, fingerprint {info.model}, "
                f"{info.dtype}); this editor runs {self.model.family} with fingerprint {self.fingerprint} "
                f"({self._dtype_name}). {fix} the image again with this editor"
            )
        path = self.model.noise_path(*inversion.source_latents.shape[-2:])
        table = step_table(info.solver, path, info.steps, info.skip)
        if not torch.equal(table.timesteps, inversion.timesteps.cpu().double()):
            raise LeditsError(
                f"this inversion's timesteps do not match {info.solver} with steps={info.steps}, "
                f"skip={info.skip} on this model's noise path ({path.spacing} spacing); "
                "invert the image again with this editor"
            )
        shapes = {tuple(t.shape) for t in (inversion.noisy_latents, inversion.denoised, inversion.noise_maps)}
        if len(shapes) != 1 or shapes.pop()[:2] != (info.steps, inversion.batch_size):
            raise LeditsError("this inversion's noise maps do not match its step count or batch; invert again")
        return table


def _names(loras: tuple[Lora, ...]) -> str:
    return "[" + ", ".join(str(lora) for lora in loras) + "]" if loras else "none"


def _folder_settings(pipe: Any) -> dict[str, Any]:
    """The ``leditspp.json`` of the local folder a pipeline was loaded from ({} where none)."""
    folder = Path(str(getattr(pipe, "name_or_path", "") or ""))
    if not str(folder) or not (folder / MODEL_SETTINGS_FILE).is_file():
        return {}
    return model_settings(str(folder))


def _say_scheduler(scheduler: Any) -> None:
    """One log line where the pipeline's scheduler is no solver's: its schedule is used, its rule is not."""
    kind = type(scheduler).__name__
    if scheduler is None or kind in SOLVER_SCHEDULERS:
        return
    logging.getLogger("leditspp.scheduler").info(  # the command line shows this logger's lines
        "the model's %s lends its noise schedule and timestep spacing; its update rule is not used — "
        "leditspp steps with its solver= (%s)",
        kind,
        ", ".join(SOLVERS),
    )


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The generator of the auxiliary noises: ``generator``, or a CPU one seeded with ``seed``
    (``defaults.SEED`` when neither is given)."""
    if seed is not None and generator is not None:
        raise LeditsError("pass either seed= or generator=, not both")
    if generator is not None:
        return generator
    return torch.Generator("cpu").manual_seed(check_seed(defaults.SEED if seed is None else seed))
