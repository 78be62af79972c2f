"""Evaluation data: TEdBench++ / PIE-Bench manifests as published, pixel metrics, CLIP and LPIPS wiring (offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from leditspp.errors import LeditsError
from leditspp.evaluation import manifests, metrics
from leditspp.evaluation.manifests import decode_rle, parse_seed, read_piebench, read_tedbench

TEDBENCH_HEADER = "img_name,target_text,skip,threshold,edit_guidance_scale,seed,steps"
TEDBENCH_ROWS = [
    "cat.png,a cat wearing a hat,0.1,0.95,10,4.39383222278441E+17,50",
    'cat.png,"a cat, sleeping",0.2,0.9,12.5,42,50.0',
    "dog.jpg,a sitting dog,0.15,0.85,7,-1.5E+19,30",
]


def _tedbench(folder, header=TEDBENCH_HEADER, rows=TEDBENCH_ROWS):
    (folder / "originals").mkdir(parents=True)
    Image.new("RGB", (37, 23), (200, 10, 10)).save(folder / "originals" / "cat.png")
    Image.new("RGB", (19, 41), (10, 200, 10)).save(folder / "originals" / "dog.jpg")
    (folder / "tedbench++.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def _runs(mask: np.ndarray) -> list[int]:
    """Encode a (H, W) bool mask as PIE-Bench's [start, length, ...] runs (the inverse of decode_rle)."""
    flat = np.concatenate([[False], mask.ravel(), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts, strict=True) for v in pair]


def _square(top, left, size, shape=(512, 512)):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


def _piebench(folder, **changes):
    images = folder / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    Image.new("RGB", (512, 512), (0, 0, 255)).save(images / "000000000000.jpg")
    Image.new("RGB", (512, 512), (255, 0, 0)).save(images / "000000000001.png")
    mapping = {
        "000000000000": {
            "image_path": "0_random_140/000000000000.jpg",
            "original_prompt": "a [red] car on a [wooden] bridge",
            "editing_prompt": "a [blue] car on a [wooden] bridge",
            "editing_instruction": "Make the car blue",
            "editing_type_id": "6",
            "blended_word": "car car",
            "mask": _runs(_square(100, 200, 50)),
        },
        "000000000001": {
            "image_path": "0_random_140/000000000001.png",
            "original_prompt": "a [cat] sitting on a sofa",
            "editing_prompt": "a sofa",
            "editing_type_id": "3",
            "blended_word": "",
            "mask": [0, 10, 600, 5],
        },
    }
    for key, value in changes.items():
        mapping["000000000000"][key] = value
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    return folder


# --- TEdBench++ -------------------------------------------------------------------------------


def test_parse_seed_reads_published_floats_and_exact_integers():
    # the float the text denotes, as pandas or float() read it (not the decimal 439383222278441000)
    assert parse_seed("4.39383222278441E+17") == 439383222278441024 == int(float("4.39383222278441E+17"))
    assert parse_seed("12345678901234567891") == 12345678901234567891  # exact, no float round trip
    assert parse_seed("-1") == 2**64 - 1
    assert 0 <= parse_seed("-1.5E+19") < 2**64
    with pytest.raises(ValueError):
        parse_seed("nan")


def test_read_tedbench_keeps_each_rows_parameters(tmp_path):
    items = read_tedbench(_tedbench(tmp_path))
    assert [i.item_id for i in items] == ["001_cat", "002_cat", "003_dog"]
    first, second, third = items
    assert first.image_path == tmp_path / "originals" / "cat.png"
    assert first.params == {"steps": 50, "skip": 0.1, "seed": 439383222278441024}
    (edit,) = first.edits
    assert (edit.prompt, edit.scale, edit.threshold, edit.remove) == ("a cat wearing a hat", 10.0, 0.95, False)
    assert first.target_prompt == "a cat wearing a hat" and first.mask is None
    assert second.edits[0].prompt == "a cat, sleeping" and second.params["steps"] == 50
    assert third.image_path.suffix == ".jpg" and third.params["steps"] == 30
    assert 0 <= third.params["seed"] < 2**64


def test_read_tedbench_accepts_spaces_and_extra_columns(tmp_path):
    header = "img_name, target_text, skip, threshold, edit_guidance_scale, seed, steps, note"
    rows = ["cat.png, a hat, 0.1, 0.9, 10, 1E+3, 50, ok", ""]
    (item,) = read_tedbench(_tedbench(tmp_path, header, rows))
    assert item.params["seed"] == 1000 and item.edits[0].prompt == "a hat"


@pytest.mark.parametrize(
    ("header", "rows", "expected"),
    [
        (TEDBENCH_HEADER.replace(",seed", ""), ["cat.png,a hat,0.1,0.9,10,50"], "missing column(s) seed"),
        (TEDBENCH_HEADER, ["missing.png,a hat,0.1,0.9,10,1,50"], "row 1 (missing.png)"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,0.9,10,1,50", "cat.png,a hat,0.1,0.9,ten,1,50"], "row 2 (cat.png)"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,90,10,1,50"], "did you mean 0.9"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1,0.9,10,1,50.5"], "column steps"),
        (TEDBENCH_HEADER, ["cat.png,,0.1,0.9,10,1,50"], "target_text is empty"),
        (TEDBENCH_HEADER, ["cat.png,a hat,0.1"], "3 cells for 7 columns"),
    ],
)
def test_broken_tedbench_names_file_and_row(tmp_path, header, rows, expected):
    _tedbench(tmp_path, header, rows)
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv") as err:
        read_tedbench(tmp_path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_tedbench_without_csv_says_what_the_folder_holds(tmp_path):
    with pytest.raises(LeditsError, match=r"tedbench\+\+\.csv: file not found; a TEdBench\+\+ folder holds"):
        read_tedbench(tmp_path)


# --- PIE-Bench --------------------------------------------------------------------------------


def test_decode_rle_follows_piebench_convention():
    inside = _square(100, 200, 50)
    mask = decode_rle(_runs(inside))
    assert mask.shape == (512, 512) and mask.dtype == bool
    # the published mask_decode marks the outermost rows/columns as edited
    border = np.zeros_like(mask)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert np.array_equal(mask, inside | border)
    assert np.array_equal(decode_rle(_runs(inside), border=False), inside)
    # runs are row-major over the flattened image and clipped at its end
    small = decode_rle([3, 2, 14, 100], (4, 4), border=False)
    assert small.ravel().nonzero()[0].tolist() == [3, 4, 14, 15]


@pytest.mark.parametrize("runs", [[1, 2, 3], [-1, 2], [1.5, 2], [512 * 512, 1], "1 2"])
def test_decode_rle_refuses_malformed(runs):
    with pytest.raises(ValueError):
        decode_rle(runs)


def test_read_piebench_gives_remove_and_add_concepts(tmp_path):
    first, second = read_piebench(_piebench(tmp_path))
    assert first.item_id == "000000000000"
    assert first.image_path == tmp_path / "annotation_images" / "0_random_140" / "000000000000.jpg"
    assert [(e.prompt, e.remove) for e in first.edits] == [("red", True), ("blue", False)]
    assert first.source_prompt == "a red car on a wooden bridge"
    assert first.target_prompt == "a blue car on a wooden bridge"
    assert first.edit_type == "change attribute (color)" and first.params == {}
    assert first.info == {"editing_type_id": "6", "blended_word": "car car", "editing_instruction": "Make the car blue"}
    assert first.mask[120, 220] and not first.mask[50, 50] and first.mask[0, 50]
    assert first.mask.sum() == 50 * 50 + 4 * 511
    assert [(e.prompt, e.remove) for e in second.edits] == [("cat", True)]
    assert second.edit_type == "delete object"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mask": [5, 1, 7]}, "start/length pairs"),
        ({"mask": [512 * 512 + 3, 2]}, "beyond the 512×512 image"),
        ({"image_path": "0_random_140/gone.jpg"}, "gone.jpg: file not found"),
        ({"editing_prompt": "a [red] car on a [wooden] bridge"}, "no bracketed words differ"),
    ],
)
def test_broken_piebench_names_file_and_item(tmp_path, changes, expected):
    _piebench(tmp_path, **changes)
    with pytest.raises(LeditsError, match=r"mapping_file\.json, item 000000000000") as err:
        read_piebench(tmp_path)
    assert expected in str(err.value)


def test_piebench_missing_key_and_bad_json(tmp_path):
    folder = _piebench(tmp_path)
    mapping = json.loads((folder / "mapping_file.json").read_text())
    del mapping["000000000001"]["mask"]
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(LeditsError, match=r"item 000000000001: missing key\(s\) mask"):
        read_piebench(folder)
    (folder / "mapping_file.json").write_text("{not json")
    with pytest.raises(LeditsError, match=r"mapping_file\.json: not valid JSON"):
        read_piebench(folder)


def test_bracket_helpers():
    assert manifests.bracketed("a [red] [sports car] on [ ]") == ["red", "sports car"]
    assert manifests.plain_prompt("a [red] car") == "a red car"


# --- pixel metrics ----------------------------------------------------------------------------


def _images(seed=0, shape=(2, 3, 32, 40)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_identical_images():
    a = _images()
    assert torch.equal(metrics.mse(a, a), torch.zeros(2))
    assert torch.isinf(metrics.psnr(a, a)).all()
    assert torch.allclose(metrics.ssim(a, a), torch.ones(2), atol=1e-5)


def test_pixel_metrics_per_image():
    a = _images()
    b = a.clone()
    b[1] = (b[1] + 0.1).clamp(0, 1)
    err = metrics.mse(a, b)
    assert err[0] == 0 and 0 < err[1] <= 0.01 + 1e-6
    assert torch.allclose(metrics.psnr(a, b)[1], -10 * torch.log10(err[1]), atol=1e-4)
    s = metrics.ssim(a, b)
    assert s[0] > s[1]


def test_masked_metrics_follow_piebench():
    a, b = _images(0), _images(1)
    region = torch.zeros(32, 40, dtype=torch.bool)
    region[:, :20] = True
    b_left_same = torch.where(region, a, b)
    # the region is where the metric looks: identical there → 0 error, inf PSNR
    assert torch.equal(metrics.mse(a, b_left_same, mask=region), torch.zeros(2))
    assert torch.isinf(metrics.psnr(a, b_left_same, mask=region)).all()
    # PIE-Bench's convention: images × region, mean over the whole frame
    expected = ((a - b) ** 2 * (~region)).mean(dim=(1, 2, 3))
    assert torch.allclose(metrics.mse(a, b_left_same, mask=~region), expected)
    # per-image masks and an empty region (NaN, as PIE-Bench)
    masks = torch.stack([region, torch.zeros_like(region)])[:, None]
    values = metrics.mse(a, b, mask=masks)
    assert not math.isnan(values[0]) and math.isnan(values[1])
    assert math.isnan(metrics.ssim(a, b, mask=masks)[1])
    # a numpy mask, as EvalItem.mask gives
    assert torch.equal(metrics.mse(a, b_left_same, mask=region.numpy()), torch.zeros(2))


def test_metric_shape_errors():
    a = _images()
    with pytest.raises(LeditsError, match=r"\(B, 3, H, W\)"):
        metrics.mse(a, a[:, :, :16])
    with pytest.raises(LeditsError, match="metric mask"):
        metrics.psnr(a, a, mask=np.ones((16, 16), dtype=bool))


def test_latent_error():
    a = torch.zeros(1, 4, 8, 8)
    b = a.clone()
    b[0, 0, 0, 0] = 0.5
    assert metrics.latent_error(a, b) == {"latent_max_abs": 0.5, "latent_mean_abs": pytest.approx(0.5 / 256)}
    with pytest.raises(LeditsError):
        metrics.latent_error(a, b[:, :2])


def test_check_metrics():
    assert metrics.check_metrics("psnr, ssim,psnr") == ("psnr", "ssim")
    assert metrics.check_metrics(["clip_score"]) == ("clip_score",)
    with pytest.raises(LeditsError, match=r"unknown metric\(s\) psnrr in --metrics; choose from"):
        metrics.check_metrics("psnrr,ssim")
    with pytest.raises(LeditsError, match="--metrics is empty"):
        metrics.check_metrics(" ,")
    assert set(metrics.MODEL_FLAGS) <= set(metrics.METRICS)


# --- CLIP and LPIPS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny random CLIPModel, its real tokenizer and a hand-written image processor config, saved to disk."""
    from transformers import CLIPConfig, CLIPModel

    from leditspp.testing import clip_tokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = clip_tokenizer(folder / "tok")
    common = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(tokenizer), "max_position_embeddings": 77},
        vision_config={**common, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def clip(clip_folder):
    return metrics.ClipScorer.from_pretrained(clip_folder)


def test_clip_scorer_loads_a_folder_and_scores(clip):
    a, b = _images(0, (2, 3, 48, 40)), _images(1, (2, 3, 48, 40))
    scores = clip.text_score(a, ["a red car", "a cat"])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 100).all()
    # the score is 100·max(cos, 0) of the unit embeddings
    cos = (clip.image_embeds(a[:1]) * clip.text_embeds(["a red car"])).sum()
    assert scores[0].item() == pytest.approx(100 * max(cos.item(), 0.0), abs=1e-4)
    same = clip.image_similarity(a, a)
    assert torch.allclose(same, torch.ones(2), atol=1e-5)
    assert (clip.image_similarity(a, b) < same).all()


def test_clip_region(clip):
    a, b = _images(0, (1, 3, 48, 40)), _images(1, (1, 3, 48, 40))
    region = torch.zeros(48, 40, dtype=torch.bool)
    region[8:24, 4:20] = True
    b = torch.where(region, a, b)  # equal inside the region
    assert clip.image_similarity(a, b, mask=region).item() == pytest.approx(1.0, abs=1e-5)
    assert clip.image_similarity(a, b, mask=region, crop=True).item() == pytest.approx(1.0, abs=1e-5)
    assert clip.image_similarity(a, b).item() < 1 - 1e-4
    cropped = clip.image_embeds(a, mask=region, crop=True)
    assert not torch.allclose(cropped, clip.image_embeds(a, mask=region))
    with pytest.raises(LeditsError, match="region mask is empty"):
        clip.image_embeds(a, mask=torch.zeros(48, 40))
    with pytest.raises(LeditsError, match="one text per image"):
        clip.text_score(a, ["x", "y"])


def test_clip_model_that_cannot_load_names_the_flag(tmp_path):
    with pytest.raises(LeditsError, match="--clip-model") as err:
        metrics.ClipScorer.from_pretrained(tmp_path / "no-such-model")
    assert "no-such-model" in str(err.value)


def test_lpips_loads_or_names_the_fix():
    """With torchvision and its cached backbone LPIPS works; without, a clear error (never a silent zero)."""
    try:
        scorer = metrics.LpipsScorer()
    except LeditsError as e:
        assert "--metrics" in str(e) and "torchvision" in str(e)
        return
    a, b = _images(0), _images(1)
    assert torch.allclose(scorer(a, a), torch.zeros(2), atol=1e-6)
    assert (scorer(a, b) > 0).all()


def test_clip_folder_of_another_model_names_the_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(LeditsError, match="pass --clip-model with a hub id"):
        metrics.ClipScorer.from_pretrained(tmp_path)


def test_lpips_scorer_wiring(monkeypatch):
    """The per-image loop and the region, with a stand-in for torchmetrics' LPIPS (its backbone needs torchvision)."""
    import torchmetrics.image.lpip as lpip

    class FakeLpips(torch.nn.Module):
        def __init__(self, net_type, normalize):
            super().__init__()
            assert (net_type, normalize) == ("alex", True)  # inputs in [0, 1]
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, x, y):
            assert x.shape[0] == 1  # one image per call, so each gets its own value
            self.calls += 1
            return self.scale * (x - y).abs().mean()

        def reset(self):
            self.calls = 0

    monkeypatch.setattr(lpip, "LearnedPerceptualImagePatchSimilarity", FakeLpips)
    scorer = metrics.LpipsScorer()
    a, b = _images(0), _images(1)
    values = scorer(a, b)
    assert torch.allclose(values, (a - b).abs().mean(dim=(1, 2, 3)))
    region = torch.zeros(32, 40, dtype=torch.bool)
    region[:4] = True
    assert torch.allclose(scorer(a, b, mask=region), ((a - b) * region).abs().mean(dim=(1, 2, 3)))
    assert math.isnan(scorer(a, b, mask=torch.zeros(2, 32, 40))[0])


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    """PIE-Bench's structure distance on a tiny random ViT saved with save_pretrained."""
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("tiny-dino")
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return metrics.StructureScorer.from_pretrained(folder)


def test_structure_distance(structure):
    a, b = _images(0, (2, 3, 48, 40)), _images(1, (2, 3, 48, 40))
    assert torch.allclose(structure(a, a), torch.zeros(2), atol=1e-8)
    assert (structure(a, b) > 0).all()
    sim = structure.self_similarity(a[0])
    tokens = 1 + (224 // 8) * (int(224 * 48 / 40) // 8)  # CLS + patches of the 224-short-side input
    assert sim.shape == (tokens, tokens)
    assert torch.allclose(sim.diagonal(), torch.ones(tokens), atol=1e-5)
    # the captured keys are the last layer's key projection of its normalised input
    assert structure.keys is [m for n, m in structure.model.named_modules() if n.endswith(("key", "k_proj"))][-1]
    region = torch.ones(48, 40, dtype=torch.bool)
    assert torch.allclose(structure(a, b, mask=region), structure(a, b))


def test_dino_input_follows_piebench_resize():
    assert metrics._dino_input(torch.rand(3, 512, 512)).shape == (3, 224, 224)
    assert metrics._dino_input(torch.rand(3, 300, 1000)).shape == (3, 144, 480)
    assert metrics._dino_input(torch.rand(3, 400, 300)).shape == (3, 298, 224)
    x = metrics._dino_input(torch.ones(3, 224, 224))  # 0–255 scale, as PIE-Bench feeds DINO
    assert x[0, 0, 0].item() == pytest.approx((255 - 0.485) / 0.229, rel=1e-4)


def test_dino_model_that_cannot_load_names_the_flag(tmp_path):
    with pytest.raises(LeditsError, match="--dino-model"):
        metrics.StructureScorer.from_pretrained(tmp_path / "missing")


def test_readers_by_suite_name(tmp_path):
    assert manifests.READERS["tedbench"](_tedbench(tmp_path / "t"))[0].item_id == "001_cat"
    assert manifests.READERS["piebench"](_piebench(tmp_path / "p"))[0].item_id == "000000000000"
