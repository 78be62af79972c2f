"""Z-Image / Z-Image-Turbo (``ZImagePipeline``) in the conformance suite, and what only Z-Image has:
captions of different lengths in one call, Turbo's settings known by name or by ``leditspp.json``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from leditspp import Editor
from leditspp.models.zimage import ZImage
from leditspp.solvers import NoiseLevel
from leditspp.testing.tiny2026 import tiny_zimage_pipeline

from . import seam
from .conformance import FamilyTests
from .kernel import Kernel


def chat(pipe, prompt: str) -> list[int]:
    """The ids of ``prompt`` in the chat template as ``ZImagePipeline`` writes it."""
    messages = [{"role": "user", "content": prompt}]
    text = pipe.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    return pipe.tokenizer(text).input_ids


class TestZImage(FamilyTests):
    family = "zimage"
    adapter = ZImage
    size_multiple = 16
    kernel = Kernel(("layers.",), ".attention", "image_pad_text", masked=True)
    sequence_range = (1, 512)
    call = (("guidance_scale", 0.0),)  # Turbo-style: no CFG
    sized_path = False  # a static shift

    def make_pipeline(self, request):
        return tiny_zimage_pipeline(seed=0)

    def text_ids(self, pipe, prompt):
        return 0, chat(pipe, prompt), 512

    def defaults(self, editor):
        return {**super().defaults(editor), "num_inference_steps": editor.recommended["steps"]}

    @pytest.fixture(scope="class")
    @classmethod
    def kernel_model(cls, editor):
        """The tiny Z-Image with its attention softened (the tiny model's logits reach ±50, where a
        masked padding key's zero logit would weigh nothing either way), so the mask visibly counts."""
        model = Editor.from_pipe(tiny_zimage_pipeline(seed=0)).model
        with torch.no_grad():
            for layer in seam.network(model).layers:
                layer.attention.norm_q.weight.mul_(0.1)
                layer.attention.norm_k.weight.mul_(0.1)
        return model

    # -- what only Z-Image has ------------------------------------------------------------------------

    def test_guidance_rows_of_different_caption_lengths_are_the_pipelines(self, editor, pipe):
        """With CFG the [cond, uncond] rows (captions of different lengths in one call) equal the
        transformer's two outputs, negated; the text masks cover each caption."""
        model = editor.model
        calls = []

        def hook(module, args, kwargs, output):
            calls.append(([x.clone() for x in args[0]], args[1].clone(), [o.clone() for o in output[0]]))

        prompt = "a photo of a cat in the snow"
        handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
        pipe.set_progress_bar_config(disable=True)
        try:
            pipe(prompt, height=64, width=96, num_inference_steps=4, guidance_scale=2.0, output_type="latent",
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
        finally:
            handle.remove()
        assert len(calls) == 4
        both = seam.encode_prompts(model, [prompt, ""])
        assert both.get("mask").sum(1).tolist() == [len(chat(pipe, p)) for p in (prompt, "")]
        for x, t_in, outs in calls:
            latents = torch.stack(x).squeeze(2)
            t = 1000 * (1 - t_in)
            v = seam.estimate(model, latents, NoiseLevel(t, 1 - t_in, t / 1000), both)
            assert (v + torch.stack(outs).squeeze(2)).abs().max() <= 1e-5
        assert seam.noise_path(model, 8, 8).describe() == "flow shift 3 pipeline-grid"

    def test_a_turbo_folder_recommends_its_settings_through_leditspp_json(self, folder, tmp_path):
        """Z-Image and Z-Image-Turbo ship the same scheduler config, so nothing in the configs says
        "few-step": a Z-Image folder gets its pipeline's 50 steps, a Turbo folder declares its 8 steps
        and no source guidance in ``leditspp.json``."""
        from leditspp.models import model_settings

        turbo = tmp_path / "turbo"
        shutil.copytree(folder, turbo)
        recommended = {"steps": 8, "skip": 0.0, "source_guidance": 0.0}
        (turbo / "leditspp.json").write_text(json.dumps({"recommended": recommended}))
        assert model_settings(str(folder)) == {"recommended": {"steps": 50}}
        assert model_settings(str(turbo)) == {"recommended": recommended}
        editor = Editor.from_pretrained(str(turbo), device="cpu")
        assert {k: editor.recommended[k] for k in recommended} == recommended

    def test_z_image_turbo_is_known_by_its_hub_id_and_its_cache_folder(self, folder, tmp_path, monkeypatch):
        """Without a ``leditspp.json``: the hub id (not downloaded: known by name) and a snapshot in the
        Hugging Face cache (read offline, its folder names the checkpoint) both recommend Turbo's 8 steps."""
        from leditspp.models import CHECKPOINT_RECOMMENDED, model_settings

        turbo = CHECKPOINT_RECOMMENDED["Tongyi-MAI/Z-Image-Turbo"]
        assert turbo == {"steps": 8, "skip": 0.0, "source_guidance": 0.0}
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
        assert model_settings("Tongyi-MAI/Z-Image-Turbo") == {"recommended": turbo}
        assert model_settings("tongyi-mai/z-image-turbo") == {"recommended": turbo}
        assert model_settings("Tongyi-MAI/Z-Image") == {}  # not cached, no name rule: nothing known before loading
        repo = tmp_path / "hub" / "models--Tongyi-MAI--Z-Image-Turbo"
        snapshot = repo / "snapshots" / ("0" * 40)
        shutil.copytree(folder, snapshot)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        assert model_settings("Tongyi-MAI/Z-Image-Turbo") == {"recommended": turbo}  # read from the cache
        assert model_settings(str(snapshot)) == {"recommended": turbo}  # the folder, by its cache name
        base = tmp_path / "hub" / "models--Tongyi-MAI--Z-Image"
        shutil.copytree(folder, base / "snapshots" / ("1" * 40))
        (base / "refs").mkdir()
        (base / "refs" / "main").write_text("1" * 40)
        assert model_settings("Tongyi-MAI/Z-Image") == {"recommended": {"steps": 50}}  # its configs, from the cache
