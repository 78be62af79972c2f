"""One conformance suite every model family joins (the shape of diffusers' ``PipelineTesterMixin``).

A family joins with one file, ``tests/families/test_<family>.py``: a class deriving from
:class:`FamilyTests` that says how to build its tiny pipeline and a few facts about it (its adapter
class, size rule, refused options, where its text tokens and attention kernel sit). It then gets the
whole grid below, and adds its own checks as more methods of that class.

Everything a check asks of the adapter goes through :mod:`.seam`; the references are the pipeline's
own ``__call__`` (its scheduler's steps, its defaults, its tokenizers) and the attention kernel's own
inputs, never the adapter's code.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp import Edit, Editor, Inversion, LeditsError, offload
from leditspp.cli import main
from leditspp.masking import MASK_MODES
from leditspp.model_options import ModelOptions
from leditspp.models import size_multiple_hint
from leditspp.models.families import family_of, parts_of, parts_of_folder
from leditspp.offload import MemoryPlan
from leditspp.solvers import NoiseLevel
from leditspp.testing import replay_tolerance

from ..conftest import scene
from . import seam
from .kernel import PROMPTS, Kernel, armed_layers, check_m1, direct, inputs, kernel_calls, places, weights

SOLVERS = ("dpmsolver++", "ddpm")
#: Ordinary words, and words a chat template also holds ("user", "assistant") or whose letters sit
#: inside its special tokens ("a", "art", "star" in "<|im_start|>").
WORDS = ("red circle", "a blue cat", "a", "art", "star", "user", "assistant", "a user with a hat")
#: The parity prompt and image size (non-square: rows and columns cannot be swapped unseen).
PROMPT, HEIGHT, WIDTH = "a red circle", 64, 96


@dataclass(frozen=True)
class Step:
    """One ``scheduler.step`` of a pipeline run: the estimate it was handed, the time, the sample, the
    sample it returned, and the noise levels ``a``, ``s`` of both ends (x = a·x0 + s·ε)."""

    output: torch.Tensor
    t: torch.Tensor
    sample: torch.Tensor
    prev: torch.Tensor
    ends: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _step_levels(scheduler: Any, timestep: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(a, s, a′, s′)`` of the step the scheduler just took (float64): a flow scheduler's σ pair,
    or DDIM's ᾱ at ``timestep`` and one stride before it."""
    if type(scheduler).__name__.startswith("FlowMatch"):
        i = scheduler.step_index - 1  # step() has moved on
        sigma, after = scheduler.sigmas[i].double(), scheduler.sigmas[i + 1].double()
        return 1 - sigma, sigma, 1 - after, after
    abar = scheduler.alphas_cumprod.double()
    t = int(timestep)
    before = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    end = abar[before] if before >= 0 else torch.tensor(float(scheduler.final_alpha_cumprod), dtype=torch.float64)
    return abar[t].sqrt(), (1 - abar[t]).sqrt(), end.sqrt(), (1 - end).sqrt()


def pipeline_steps(pipe: Any, scheduler: Any, **call: Any) -> list[Step]:
    """Run ``pipe(**call)`` with ``scheduler`` (its own, or one of its config's family) and record
    every ``scheduler.step``."""
    steps: list[Step] = []
    own = pipe.scheduler
    step = scheduler.step

    def spy(model_output, timestep, sample, *args, **kwargs):
        out = step(model_output, timestep, sample, *args, **kwargs)
        prev = out[0] if isinstance(out, tuple) else out.prev_sample
        t = torch.as_tensor(timestep).reshape(())
        steps.append(Step(model_output.clone(), t.clone(), sample.clone(), prev.clone(), _step_levels(scheduler, t)))
        return out

    scheduler.step = spy
    pipe.scheduler = scheduler
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe(**call, output_type="latent", generator=torch.Generator().manual_seed(0))
    finally:
        del scheduler.step
        pipe.scheduler = own
    return steps


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _hooks(module: torch.nn.Module) -> set[str]:
    """The offload hooks on ``module`` and its submodules: accelerate's ``cpu_offload`` or diffusers'
    group offloading by its ``offload_type``."""
    from accelerate.hooks import CpuOffload

    kinds = set()
    for sub in module.modules():
        if isinstance(getattr(sub, "_hf_hook", None), CpuOffload):
            kinds.add("cpu_offload")
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if hook is not None:
            kinds.add(str(hook.config.offload_type.value))
    return kinds


class FamilyTests:
    """The grid; a family's class fills in the facts below and :meth:`make_pipeline`."""

    family: ClassVar[str]
    adapter: ClassVar[type]
    size_multiple: ClassVar[int]
    kernel: ClassVar[Kernel]
    #: options the family refuses, each with a value to try
    refused: ClassVar[tuple[tuple[str, Any], ...]] = (("mask_level", 1), ("spacing", "trailing"))
    #: ``max_sequence_length``'s range, and text tokens before the range's (SD3: CLIP's 77)
    sequence_range: ClassVar[tuple[int, int] | None] = None
    text_offset: ClassVar[int] = 0
    #: keyword arguments of a pipeline call without classifier-free guidance
    call: ClassVar[tuple[tuple[str, Any], ...]] = ()
    #: session fixtures holding this family's saved folder and its editor (None: built here)
    folder_fixture: ClassVar[str | None] = None
    editor_fixture: ClassVar[str | None] = None
    #: the memory plans that hook components (every family whose denoiser supports group offloading: both)
    plans: ClassVar[tuple[str, ...]] = ("model", "group")
    #: whether the flow schedule follows the image size (a saved inversion of another size is refused)
    sized_path: ClassVar[bool] = True
    #: (width, height) a 96 × 64 photo is edited at (a model made for one size crops it to that size)
    photo_size: ClassVar[tuple[int, int]] = (96, 64)
    #: the multiple of the fp32 replay bound (:func:`~leditspp.testing.replay_tolerance`) its tiny model needs
    replay_scale: ClassVar[float] = 1.0

    # -- what a family provides ---------------------------------------------------------------------

    def make_pipeline(self, request: pytest.FixtureRequest) -> Any:
        """A fresh tiny pipeline (or components dict) of the family, seeded."""
        raise NotImplementedError

    def parity_scheduler(self, pipe: Any) -> Any:
        """The scheduler the parity run steps with: the pipeline's own, or one of its config's with a
        deterministic step (DDIM for a UNet pipeline's multistep default)."""
        return pipe.scheduler

    def latents_of(self, sample: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's latents (its packing) as the editor's (B, C, h, w)."""
        return sample

    def text_ids(self, pipe: Any, prompt: str) -> tuple[int, list[int], int]:
        """How the pipeline tokenizes ``prompt`` for the sequence the token positions index: where
        that sequence starts among the conditioning's tokens, its ids unpadded, and its length."""
        raise NotImplementedError

    def defaults(self, editor: Editor) -> dict[str, Any]:
        """The family's defaults that its pipeline's ``__call__`` also has, by that parameter's name
        (here: the text tokens, where the family takes ``max_sequence_length``)."""
        if self.sequence_range is None:
            return {}
        return {"max_sequence_length": seam.text_tokens(editor.model) - self.text_offset}

    def registration(self) -> contextlib.AbstractContextManager[Any]:
        """Where the family must be registered to be found (a family outside the package)."""
        return contextlib.nullcontext()

    # -- fixtures -----------------------------------------------------------------------------------

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def one_thread(cls) -> Iterator[None]:
        """One CPU thread is faster for these tiny networks (and kinder to a shared machine)."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)

    @pytest.fixture(scope="class")
    @classmethod
    def pipe(cls, request: pytest.FixtureRequest) -> Any:
        return cls().make_pipeline(request)

    @pytest.fixture(scope="class")
    @classmethod
    def folder(cls, request: pytest.FixtureRequest, pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
        """The pipeline written with ``save_pretrained`` (None where it cannot be)."""
        if cls.folder_fixture:
            return request.getfixturevalue(cls.folder_fixture)
        if not hasattr(pipe, "save_pretrained"):
            return None
        path = tmp_path_factory.mktemp(cls.family)
        pipe.save_pretrained(path)
        return path

    @pytest.fixture(scope="class")
    @classmethod
    def editor(cls, request: pytest.FixtureRequest, folder: Any, pipe: Any) -> Editor:
        """The editor of the saved folder (of the pipeline where there is none)."""
        if cls.editor_fixture:
            return request.getfixturevalue(cls.editor_fixture)
        with cls().registration():
            return Editor.from_pretrained(str(folder), device="cpu") if folder else Editor.from_pipe(pipe)

    @pytest.fixture(scope="class")
    @classmethod
    def kernel_model(cls, editor: Editor) -> Any:
        """The model whose attention the M¹ checks read."""
        return editor.model

    def _needs_pipeline(self, pipe: Any) -> None:
        if not callable(pipe):
            pytest.skip(f"the {self.family} family has no pipeline of its own")

    def _needs_folder(self, folder: Any) -> None:
        if folder is None:
            pytest.skip(f"the {self.family} family cannot be saved as a folder")

    # -- detection and options ----------------------------------------------------------------------

    def test_detected_from_its_files_before_loading(self, folder, pipe, editor):
        with self.registration():
            parts = parts_of_folder(folder) if folder else parts_of(pipe)
            assert family_of(parts) is self.adapter
            if folder:
                assert size_multiple_hint(str(folder)) == self.size_multiple
        assert isinstance(editor.model, self.adapter) and editor.model.family == self.family
        assert editor.size_multiple == self.size_multiple

    def test_options_it_cannot_take_are_refused(self, pipe):
        with self.registration():
            for option, value in self.refused:
                with pytest.raises(LeditsError, match=f"{self.family} models do not take {option}"):
                    Editor.from_pipe(pipe, **{option: value})
            if self.sequence_range is None:
                return
            low, high = self.sequence_range
            for bad in (low - 1, high + 1, True, "64"):
                with pytest.raises(LeditsError, match=rf"max_sequence_length must be an integer in \[{low}, {high}\]"):
                    Editor.from_pipe(pipe, max_sequence_length=bad)
            short = Editor.from_pipe(pipe, max_sequence_length=64).model
            assert seam.text_tokens(short) == self.text_offset + 64
            assert seam.encode_prompts(short, ["a red circle"]).embeds.shape[1] == self.text_offset + 64

    def test_defaults_are_its_pipelines(self, pipe, editor):
        """Each default the family shares with its pipeline is the value of the pipeline's ``__call__``."""
        self._needs_pipeline(pipe)
        ours = self.defaults(editor)
        if not ours:
            pytest.skip(f"the {self.family} family takes no default from its pipeline")
        signature = inspect.signature(type(pipe).__call__).parameters
        assert {name: signature[name].default for name in ours} == ours

    # -- the pipeline's estimate and step --------------------------------------------------------------

    def test_estimate_and_data_prediction_are_the_pipelines_step(self, pipe, editor):
        """On a 64 × 96 generation without guidance: our estimate for the latents, time and prompt
        of each of the pipeline's scheduler steps is the estimate the pipeline handed the step, and
        the step's result is the deterministic step from our data prediction x̂0 (x′ = a′x̂0 + s′ε̂,
        ε̂ = (x − a·x̂0)/s) — a flipped sign or scale in ``to_data`` moves it."""
        self._needs_pipeline(pipe)
        model = editor.model
        scheduler = self.parity_scheduler(pipe)
        call = {"prompt": PROMPT, "height": HEIGHT, "width": WIDTH, "num_inference_steps": 3, **dict(self.call)}
        steps = pipeline_steps(pipe, scheduler, **call)
        h, w = seam.encode(model, torch.zeros(1, 3, HEIGHT, WIDTH)).shape[-2:]
        cond = seam.encode_prompts(model, [PROMPT])
        assert len(steps) == 3
        for step in steps:
            a, s, a_next, s_next = step.ends
            x = self.latents_of(step.sample, h, w).float()
            level = NoiseLevel(step.t.float().reshape(1), a.float().reshape(1), s.float().reshape(1))
            theirs = self.latents_of(step.output, h, w).float()
            ours = seam.estimate(model, x, level, cond)
            assert (ours - theirs).abs().max() <= 1e-5 * max(1.0, theirs.abs().max().item())
            x0 = seam.to_data(model, theirs, x, level).double()
            expected = a_next * x0 + s_next * (x.double() - a * x0) / s
            prev = self.latents_of(step.prev, h, w).double()
            assert (expected - prev).abs().max() <= 1e-4 * max(1.0, prev.abs().max().item())

    # -- exactness ----------------------------------------------------------------------------------

    @pytest.mark.parametrize(("solver", "steps"), list(itertools.product(SOLVERS, [1, 4, 8])))
    def test_reconstruction_is_exact(self, editor, solver, steps):
        inv = editor.invert(scene(64, 64), steps=steps, skip=0.0, solver=solver, seed=0)
        assert inv.noise_maps.shape[:2] == (steps, 1) and inv.info.family == self.family
        assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_non_square_source_prompt_and_batches(self, editor, solver):
        """64 × 96 with a source prompt: exact with no edit; a scale-0 concept replays through the
        network within fp32 rounding; two concepts of different lengths edit, each image of a batch
        of two as it edits alone."""
        images = [scene(64, 96, seed=1), scene(64, 96, seed=2)]
        inv = editor.invert(images, steps=4, skip=0.0, solver=solver, seed=1, source_prompt="a scene")
        assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)
        replay = editor.edit(inv, [Edit("red circle", scale=0.0)], mask_mode="none", decode=False).latents
        assert (replay - inv.source_latents).abs().max() <= self.replay_scale * replay_tolerance(inv.source_latents)
        edits = [Edit("red circle", scale=6.0, threshold=0.7), Edit(PROMPTS[2], scale=4.0, remove=True)]
        both = editor.edit(inv, edits, decode=False).latents
        assert not torch.allclose(both, inv.source_latents, atol=1e-3)
        alone = editor.edit(inv.select(1), edits, decode=False).latents
        assert (both[1:] - alone).abs().max() <= self.replay_scale * replay_tolerance(alone)

    # -- token positions and masks --------------------------------------------------------------------

    @pytest.mark.parametrize("prompt", WORDS)
    def test_token_positions_are_the_prompts_own_tokens(self, pipe, editor, prompt):
        """The positions are exactly the tokens the pipeline's tokenization of ``prompt`` adds to its
        tokenization of "" (so inside a chat template: after its opening, not the template's own
        "user" nor nothing for "a")."""
        offset, ids, length = self.text_ids(pipe, prompt)
        _, empty, _ = self.text_ids(pipe, "")
        start = _common(ids, empty)
        end = len(ids) - _common(ids[start:][::-1], empty[start:][::-1])
        expected = [offset + i for i in range(start, min(end, length))]
        assert expected and seam.token_positions(editor.model, prompt) == expected

    def test_a_concepts_token_weights_sit_on_its_positions(self, editor):
        prompts = ["red circle", "a blue cat"]
        rows = seam.concept_weights(editor, prompts)
        for row, prompt in zip(rows, prompts, strict=True):
            assert row.nonzero().flatten().tolist() == seam.token_positions(editor.model, prompt)
            assert set(row.unique().tolist()) == {0.0, 1.0}

    def test_m1_is_the_softmax_of_the_kernels_own_inputs(self, kernel_model, monkeypatch):
        check_m1(kernel_model, self.kernel, monkeypatch)

    def test_the_concepts_text_keys_are_where_this_suite_reads_them(self, kernel_model, monkeypatch):
        """The kernel layout, checked on the kernel's keys: changing the concept's text embeddings
        moves, in the first armed layer, its token columns (and for a cross-attention or an MMDiT only
        those; Z-Image's caption refiner moves the whole caption), and never an image key."""
        model = kernel_model
        cond, x, level = inputs(model)
        _, positions = weights(model, cond)
        grid = seam.mask_grid(model, *x.shape[-2:])
        moved = cond.embeds.clone()
        moved[1, positions[0]] += 1.0
        keys = []
        for embeds in (cond.embeds, moved):
            with kernel_calls(model, self.kernel, monkeypatch) as calls:
                seam.estimate(model, x, level, type(cond)({**cond.tensors, "embeds": embeds}))
            keys.append(calls[0][1][1])  # row 1's keys in the first armed layer, (heads, K, d)
        changed = ((keys[1] - keys[0]).abs().amax(dim=(0, 2)) > 1e-6).nonzero().flatten().tolist()
        order, tokens = self.kernel.order, cond.embeds.shape[1]
        _, first, text = places(order, calls[0][0].shape[2], keys[0].shape[1], grid[0] * grid[1], tokens)
        stated = [first + j for j in positions[0]]
        assert set(stated) <= set(changed) <= set(range(keys[0].shape[1])[text])
        if order != "image_pad_text":
            assert changed == stated

    def test_a_wrong_row_or_column_would_fail_the_m1_comparison(self, kernel_model, monkeypatch):
        """The direct map tells rows and columns apart: the neighbouring row's map and the map one
        column further both differ from the right one by far more than the tolerance."""
        model = kernel_model
        cond, x, level = inputs(model)
        _, positions = weights(model, cond)
        grid = seam.mask_grid(model, *x.shape[-2:])
        with kernel_calls(model, self.kernel, monkeypatch) as calls:
            seam.estimate(model, x, level, cond)
        tokens, cells, order = cond.embeds.shape[1], grid[0] * grid[1], self.kernel.order
        right = direct(calls, 1, positions[0], order, cells, tokens)
        for wrong in (
            direct(calls, 2, positions[0], order, cells, tokens),
            direct(calls, 1, [p + 1 for p in positions[0]], order, cells, tokens),
        ):
            assert not torch.allclose(wrong, right, atol=1e-5, rtol=1e-4)

    def test_capture_leaves_the_network_bit_identical(self, kernel_model):
        model = kernel_model
        cond, x, level = inputs(model, seed=1)
        w, _ = weights(model, cond)
        grid = seam.mask_grid(model, *x.shape[-2:])
        plain = seam.estimate(model, x, level, cond)
        with seam.capture(model) as recorder:
            unarmed = seam.estimate(model, x, level, cond)
            recorder.arm(slice(2, 3), w[1:])
            armed = seam.estimate(model, x, level, cond)
            recorded = recorder.take(grid)
        assert torch.equal(plain, unarmed) and torch.equal(plain, armed)
        assert recorded.shape == (1, *grid) and recorded.sum() > 0
        assert len(armed_layers(model, self.kernel)) > 0

    @pytest.mark.parametrize("mode", MASK_MODES)
    def test_every_mask_mode_edits(self, editor, mode):
        inv = editor.invert(scene(seed=3), steps=4, skip=0.0, seed=0)
        out = editor.edit(inv, [Edit("red circle", scale=6.0, threshold=0.7), "-a cat"], mask_mode=mode, decode=False)
        assert out.latents.isfinite().all() and not torch.allclose(out.latents, inv.source_latents, atol=1e-3)
        share = float(out.mask_means.mean())
        assert share == 1.0 if mode == "none" else 0 < share < 1

    def test_preserve_resets_the_solver_history_of_cells_that_join_late(self, editor, monkeypatch):
        """With ``preserve``, a cell outside the region R so far carries the source's solver history
        D into the next step (dpmsolver++ reads it): a cell joining R later starts from the source's
        state, not from the edited neighbourhood's."""
        import leditspp.editing as editing

        inv = editor.invert(scene(seed=3), steps=6, skip=0.0, solver="dpmsolver++", seed=0)
        histories, parts = [], []
        step_mean, edit_region = editing.step_mean, editing.edit_region

        def spy_step(x, x0, prev_x0, *args):
            histories.append(None if prev_x0 is None else prev_x0.clone())
            return step_mean(x, x0, prev_x0, *args)

        def spy_region(masks, cells):
            parts.append(edit_region(masks, cells))
            return parts[-1]

        monkeypatch.setattr(editing, "step_mean", spy_step)
        monkeypatch.setattr(editing, "edit_region", spy_region)
        edit = Edit("red circle", scale=8.0, threshold=0.9)
        editor.edit(inv, [edit], mask_mode="noise", preserve=0, decode=False)
        assert len(histories) == len(parts) == 6
        regions = list(itertools.accumulate(parts, torch.maximum))
        assert (regions[-1] > 0).sum() > (regions[0] > 0).sum() > 0  # cells joined late
        for j in range(1, 6):
            outside = (regions[j - 1] == 0).expand_as(histories[j])
            assert torch.equal(histories[j][outside], inv.denoised[j - 1][outside]), j

    # -- memory plans -------------------------------------------------------------------------------

    def test_each_plan_hooks_each_component_as_it_says(self, request):
        """``model``: the text encoders carry accelerate's CPU-offload hooks, nothing else any hook;
        ``group``: the text encoders stream leaf by leaf, the denoiser block by block, the VAE stays."""
        for plan in self.plans:
            with self.registration():
                model = Editor.from_pipe(self.make_pipeline(request), offload=plan).model
            denoiser = seam.network(model)
            for name, module in seam.components(model).items():
                encoder = name.startswith("text_encoder")
                if plan == "model":
                    expected = {"cpu_offload"} if encoder else set()
                else:
                    expected = {"leaf_level"} if encoder else {"block_level"} if module is denoiser else set()
                assert _hooks(module) == expected, (plan, name)

    def test_auto_counts_the_weights_already_on_the_device(self, request, monkeypatch):
        """``auto`` on a device (``meta`` here, standing for a GPU) that already holds every weight:
        those bytes are free for them, so with half the model's bytes free besides, nothing is
        offloaded — the same free memory with the weights in host RAM is not enough."""
        pipe = self.make_pipeline(request)
        components = dict(pipe.components) if hasattr(pipe, "components") else dict(pipe)
        total = offload.component_bytes(components).resident("none")
        monkeypatch.setattr(offload, "free_bytes", lambda device: total // 2)
        meta = torch.device("meta")
        assert offload.resolve(MemoryPlan(), components, meta).offload != "none"
        for module in components.values():
            if isinstance(module, torch.nn.Module):
                module.to(meta)
        assert offload.resolve(MemoryPlan(), components, meta).offload == "none"

    # -- saved inversions and the front ends ------------------------------------------------------------

    def test_a_saved_inversion_edits_as_the_original(self, editor, tmp_path):
        inv = editor.invert(scene(64, 64), steps=4, skip=0.0, seed=0)
        loaded = Inversion.load(inv.save(tmp_path / "saved.inv.safetensors"))
        assert loaded.info.family == self.family and (loaded.info.height, loaded.info.width) == (64, 64)
        assert loaded.info.noise_path == seam.noise_path(editor.model, *inv.source_latents.shape[-2:]).describe()
        assert torch.equal(loaded.timesteps, inv.timesteps)
        assert torch.equal(editor.edit(loaded, decode=False).latents, inv.source_latents)
        if self.sized_path:
            wide = editor.invert(scene(64, 96), steps=4, skip=0.0, seed=0)
            assert not torch.equal(wide.timesteps, inv.timesteps)  # the schedule follows the token count
            with pytest.raises(LeditsError, match="timesteps do not match"):
                editor.edit(dataclasses.replace(loaded, timesteps=wide.timesteps), decode=False)

    def test_the_cli_edits_inverts_and_edits_a_saved_inversion(self, folder, tmp_path):
        """A recipe; then an edit, and the same edit of the photo's saved inversion: the same image."""
        self._needs_folder(folder)
        photo, recipe = tmp_path / "photo.png", tmp_path / "recipe.json"
        scene(64, 96, seed=5).save(photo)
        recipe.write_text(json.dumps({"edits": ["+red circle:4", "-blue square:3@0.8"], "steps": 3, "skip": 0.0}))
        common = ["--model", str(folder), "--device", "cpu", "--quiet"]
        out, inv, again = tmp_path / "out.png", tmp_path / "photo.inv.safetensors", tmp_path / "again.png"
        assert main(["edit", str(photo), "--recipe", str(recipe), "-o", str(out), *common]) == 0
        with Image.open(out) as image:
            assert image.size == self.photo_size and json.loads(image.text["leditspp"])["steps"] == 3
        settings = ["--steps", "3", "--skip", "0", *common]
        assert main(["edit", str(photo), "-e", "+red circle:4", "-o", str(out), *settings]) == 0
        assert main(["invert", str(photo), "-o", str(inv), *settings]) == 0
        assert Inversion.load(inv).info.family == self.family
        assert main(["edit", "--inversion", str(inv), "-e", "+red circle:4", "-o", str(again), *common]) == 0
        with Image.open(out) as direct, Image.open(again) as replayed:
            assert replayed.size == self.photo_size and np.array_equal(np.asarray(direct), np.asarray(replayed))

    def test_the_web_ui_edits_its_folder(self, folder):
        from leditspp.webui import EditorService, run_edit

        self._needs_folder(folder)
        service = EditorService(model=str(folder), options=ModelOptions(device="cpu"))
        settings = {"steps": 3, "skip": 0.0, "solver": "dpmsolver++", "seed": 0, "source_prompt": ""}
        rows = [["red circle", "+", 4, 0.8, 0, None], ["blue square", "-", 3, 0.8, 0, None]]
        edited, overlays, *_ = run_edit(
            service, scene(64, 96), rows, {**settings, "source_guidance": 0, "mask_mode": "intersect"}
        )
        assert service.editor.model.family == self.family
        assert edited.size == self.photo_size and len(overlays) == 2

    def test_eval_shapes_runs_on_its_folder(self, folder, tmp_path):
        self._needs_folder(folder)
        out = tmp_path / "eval"
        args = ["eval", "shapes", "-o", str(out), "--scenes", "1", "--steps", "2", "--model", str(folder)]
        assert main([*args, "--device", "cpu", "--quiet"]) == 0
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        recon = [r for r in rows if r["edit_type"] == "reconstruction"]
        assert rows and not any(r["error"] for r in rows) and float(recon[0]["recon_latent"]) < 1e-4

    def test_bf16_networks_keep_fp32_solver_state_and_reconstruct_exactly(self, folder):
        self._needs_folder(folder)
        editor = Editor.from_pretrained(str(folder), device="cpu", torch_dtype=torch.bfloat16)
        inv = editor.invert(scene(), steps=2, skip=0.0, seed=0)
        assert editor.model.dtype == torch.bfloat16 and inv.noise_maps.dtype == torch.float32
        assert torch.equal(editor.edit(inv, [], decode=False).latents, inv.source_latents)
        assert torch.isfinite(editor.edit(inv, ["+red circle:4"], decode=False).latents).all()
