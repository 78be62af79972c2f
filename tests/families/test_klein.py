"""FLUX.2 [klein] (``Flux2KleinPipeline``) in the conformance suite, and what only [klein] has: the
distilled checkpoint's settings, Base's guidance rows, the batch-normalised patchified latents."""

from __future__ import annotations

import json
import shutil
from typing import Any

import torch

from leditspp import Editor
from leditspp.models.families import Part, family_of, parts_of_folder
from leditspp.models.klein import Klein, patchify, unpatchify
from leditspp.solvers import NoiseLevel
from leditspp.testing.tiny2026 import tiny_klein_pipeline

from ..conftest import scene
from . import seam
from .conformance import FamilyTests
from .kernel import Kernel


def chat(pipe: Any, prompt: str) -> list[int]:
    """The ids of ``prompt`` in the chat template as ``Flux2KleinPipeline`` writes it."""
    messages = [{"role": "user", "content": prompt}]
    text = pipe.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    return pipe.tokenizer(text).input_ids


class TestKlein(FamilyTests):
    family = "klein"
    adapter = Klein
    size_multiple = 16  # 8 (VAE) × 2 (patchify)
    kernel = Kernel(("transformer_blocks.", "single_transformer_blocks."), ".attn", "text_image")
    sequence_range = (1, 512)

    def make_pipeline(self, request):
        return tiny_klein_pipeline(seed=0, distilled=True)

    def latents_of(self, sample, height, width):
        return sample.transpose(1, 2).reshape(sample.shape[0], -1, height, width)

    def text_ids(self, pipe, prompt):
        return 0, chat(pipe, prompt), 512

    # -- what only [klein] has ----------------------------------------------------------------------

    def test_the_mask_grid_the_flux2_dev_text_encoder_and_base(self, editor, folder, pipe):
        assert editor.model.distilled and editor.model.mask_level == 0
        assert seam.mask_grid(editor.model, 4, 6) == (4, 6)
        # FLUX.2 [dev] has the same transformer class but a Mistral text encoder: not this family
        parts = parts_of_folder(folder)
        assert family_of({**parts, "text_encoder": Part("Mistral3ForConditionalGeneration", {})}) is None
        assert not Editor.from_pipe(type(pipe)(**pipe.components, is_distilled=False)).model.distilled

    def test_base_guidance_rows_and_times_are_the_pipelines(self, editor, pipe):
        """[klein] Base's CFG row is our c_∅; the times are the path's (size- and steps-dependent μ
        on the pipeline's grid)."""
        base = type(pipe)(**pipe.components, is_distilled=False)
        base.set_progress_bar_config(disable=True)
        model = editor.model
        calls = []

        def hook(module, args, inputs, output):
            calls.append((inputs, output[0]))

        latents = torch.randn(1, 128, 4, 6, generator=torch.Generator().manual_seed(0))
        handle = base.transformer.register_forward_hook(hook, with_kwargs=True)
        try:
            base(prompt="a red circle", height=64, width=96, num_inference_steps=3, latents=latents,
                 guidance_scale=4.0, output_type="latent")  # fmt: skip
        finally:
            handle.remove()
        assert len(calls) == 6  # a cond and an uncond call per step
        conds = [seam.encode_prompts(model, ["a red circle"]), seam.unconditional(model, "", 1)]
        for i, (inputs, output) in enumerate(calls):
            x = self.latents_of(inputs["hidden_states"], 4, 6)
            assert torch.equal(conds[i % 2].embeds, inputs["encoder_hidden_states"])
            t = inputs["timestep"].double() * 1000
            v = seam.estimate(model, x, NoiseLevel(t, 1 - t / 1000, t / 1000), conds[i % 2])
            assert (v - self.latents_of(output, 4, 6)).abs().max() <= 1e-5
        seen = torch.stack([inputs["timestep"][0] * 1000 for inputs, _ in calls[::2]]).double()
        path = seam.noise_path(model, 4, 6)  # 24 tokens; the 3-step schedule = 2 steps and the end
        assert torch.allclose(torch.cat([path.times(2, 0), path.end(2)]), seen, rtol=1e-6)
        assert path.describe() == "flow empirical-mu tokens 24 pipeline-grid"

    def test_encode_and_decode_normalise_like_the_pipeline(self, editor, pipe):
        x = torch.randn(2, 32, 8, 12)
        assert torch.equal(patchify(x), pipe._patchify_latents(x)) and torch.equal(unpatchify(patchify(x)), x)
        pixels = torch.rand(1, 3, 64, 96) * 2 - 1
        z = seam.encode(editor.model, pixels)
        with torch.no_grad():
            reference = pipe._encode_vae_image(pixels, generator=None)
            bn = pipe.vae.bn
            std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps)
            raw = pipe._unpatchify_latents(z * std + bn.running_mean.view(1, -1, 1, 1))
            decoded = pipe.vae.decode(raw, return_dict=False)[0].clamp(-1, 1)
        assert z.shape == (1, 128, 4, 6) and torch.allclose(z, reference, atol=1e-6)
        assert torch.allclose(seam.decode(editor.model, z), decoded, atol=1e-6)

    def test_a_prompt_longer_than_the_window_warns_and_keeps_its_first_tokens(self, editor, pipe, caplog):
        short = Editor.from_pipe(pipe, max_sequence_length=8)  # the template alone is 12 tokens
        with caplog.at_level("WARNING", logger="leditspp"):
            seam.encode_prompts(short.model, ["red circle"])
        assert "prompt 'red circle' is 14 tokens as the text encoder reads it; it reads only the first 8" in caplog.text
        assert seam.token_positions(short.model, "red circle") == [3, 4]
        batch = seam.concept_weights(editor, ["red circle"])
        assert batch.shape == (1, 512)

    def test_the_distilled_checkpoint_recommends_its_four_steps(self, editor, folder, tmp_path):
        """model_index.json's ``is_distilled`` → 4 steps, no skip, no source guidance (the CLI, the
        web UI and ``Editor.from_pretrained`` read it; ``from_pipe`` reads the loaded pipeline's
        config); [klein] Base gets its pipeline's 50 steps."""
        from leditspp import defaults
        from leditspp.cli import main
        from leditspp.models import model_settings

        distilled = {"steps": 4, "skip": 0.0, "source_guidance": 0.0}
        assert model_settings(str(folder)) == {"recommended": distilled}
        assert {k: editor.recommended[k] for k in distilled} == distilled
        assert editor.recommended["solver"] == defaults.SOLVER
        assert Editor.from_pipe(tiny_klein_pipeline(distilled=False)).recommended["steps"] == 50
        base = tmp_path / "klein-base"
        shutil.copytree(folder, base)
        index = json.loads((base / "model_index.json").read_text())
        (base / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}))
        assert model_settings(str(base)) == {"recommended": {"steps": 50}}
        (base / "leditspp.json").write_text(json.dumps({"recommended": {"scale": 5.0, "steps": 28}}))
        assert model_settings(str(base)) == {"recommended": {"steps": 28, "scale": 5.0}}
        photo, out = tmp_path / "photo.png", tmp_path / "out.png"
        scene(64, 96).save(photo)
        args = ["edit", str(photo), "-e", "+red circle", "--model", str(folder), "-o", str(out)]
        assert main([*args, "--device", "cpu", "--quiet"]) == 0
        from PIL import Image

        with Image.open(out) as written:
            assert json.loads(written.text["leditspp"])["steps"] == 4
