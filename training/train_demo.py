"""Train the built-in demo model on the shapes world (CPU or CUDA, reproducible, resumable).

Stages, each resumable from ``--work`` (default ``training/work``, git-ignored):

1. ``vae``     — a factor-4 ``AutoencoderKL`` (128 px → 32×32×4) on random 64 px crops of scenes,
                 MSE + a small KL term; the latent scaling factor is set to 1/std of the latents.
                 With ``--init FOLDER`` the exported model's VAE is taken as it is.
2. ``latents`` — render and encode the training scenes (seeds from ``TRAIN_SEED0`` on; the
                 evaluation uses seeds below it) to the posterior means, once, with each object's
                 exact mask as area fractions on the latent grid.
2b. ``subsets`` — (for ``--exact-captions``) the training scenes redrawn with a random part of
                 their objects, and the empty backgrounds, encoded the same way.
3. ``unet``    — a ``UNet2DConditionModel`` with cross-attention at ½ and ¼ latent resolution,
                 and a from-scratch ``CLIPTextModel`` (real CLIP tokenizer), trained jointly:
                 ε-prediction on SD's scaled-linear schedule, min-SNR-5 weighting, captions that
                 name every object (full or short form), a random subset of them in the short
                 form an edit uses ("blue square"), or nothing (10 %, for classifier-free
                 guidance); EMA of the weights; bf16 autocast. ``--ground TOKEN PIXEL`` adds
                 TokenCompose's grounding losses (Wang et al., CVPR 2024) on every cross-attention
                 layer: each named object's colour and shape tokens should put their attention
                 mass inside the object's mask (token loss) and their max-normalised map should
                 match the mask (pixel BCE). ``--init FOLDER`` fine-tunes an exported model.
                 ``--exact-captions``: a caption naming some objects goes with the scene redrawn
                 with just them, the empty one with the empty background — captions name exactly
                 what is there, so the unconditional prediction is the background a removal
                 should return to.
4. ``export``  — the EMA weights as a diffusers ``StableDiffusionPipeline`` folder
                 (``src/leditspp/demo/demo_model`` by default; a ``leditspp.json`` already there stays).

    python training/train_demo.py all                       # from scratch, resuming where it stopped
    python training/train_demo.py all --init src/leditspp/demo/demo_model --ground 0.02 0.01 \
        --steps 1800 --lr 3e-4 --out /tmp/grounded            # the shipped model's fine-tune

See the README, "The demo model", for the runs behind the shipped weights and their times.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leditspp.demo import SD_SCHEDULE, shapes
from leditspp.testing import write_clip_tokenizer_files

TRAIN_SEED0 = 1_000_000  # training scenes use seeds ≥ this; evaluation seeds stay below
MAX_OBJECTS = 3  # objects per scene at most (shapes.scene)
ROOT = Path(__file__).resolve().parent.parent


def vae_model():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=shapes.SIZE,
        mid_block_add_attention=False,
    )


def unet_model():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=shapes.SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def text_model(tokenizer):
    from leditspp.testing import clip_text_encoder

    return clip_text_encoder(tokenizer, 64, layers=3, heads=4, intermediate=256)


def tokenizer_at(work: Path):
    from transformers import CLIPTokenizer

    folder = work / "tokenizer"
    if not (folder / "vocab.json").exists():
        write_clip_tokenizer_files(folder)
        CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77).save_pretrained(
            folder
        )
    return CLIPTokenizer.from_pretrained(folder)


def to_pixels(images) -> torch.Tensor:
    """PIL images → (B, 3, H, W) in [−1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def log(work: Path, **values) -> None:
    line = json.dumps(values)
    print(line, flush=True)
    with open(work / "log.jsonl", "a") as f:
        f.write(line + "\n")


# --- shared by the demo trainers (this one and train_demo_flow.py) -------------------------------


def warmup_cosine(steps: int):
    """LambdaLR factor: linear warm-up over min(300, steps/20) steps, then cosine down to 0.1."""
    warmup = min(300, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return lr_at


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], step: int) -> None:
    """EMA of the weights with the warm-up decay min(0.999, (1 + step)/(10 + step))."""
    decay = min(0.999, (1 + step) / (10 + step))
    for e, p in zip(ema, params, strict=True):
        e.lerp_(p.detach(), 1 - decay)


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temp beside ``path``, then rename: a killed run leaves the last whole one."""
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


# --- stage 1: autoencoder ---------------------------------------------------------------------


def train_vae(work: Path, steps: int, batch: int, seed: int, init: Path | None = None) -> None:
    """Train the autoencoder, or with ``init`` take an exported model's (fine-tuning keeps it)."""
    out = work / "vae"
    if (out / "config.json").exists():
        print("vae: done already")
        return
    if init is not None:
        from diffusers import AutoencoderKL

        AutoencoderKL.from_pretrained(init / "vae", torch_dtype=torch.float32).save_pretrained(out)
        return
    torch.manual_seed(seed)
    vae = vae_model()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    rng = random.Random(seed)
    t0 = time.time()
    for step in range(steps):
        crops = []
        for _ in range(batch):
            image = shapes.scene(rng.randrange(TRAIN_SEED0, 2**31)).image
            x, y = rng.randrange(0, 65, 4), rng.randrange(0, 65, 4)
            crops.append(image.crop((x, y, x + 64, y + 64)))
        pixels = to_pixels(crops)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            posterior = vae.encode(pixels).latent_dist
            recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon.float(), pixels)
        kl = posterior.kl().mean() / pixels[0].numel()
        loss = mse + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(
                work,
                stage="vae",
                step=step,
                mse=round(mse.item(), 5),
                kl=round(kl.item(), 4),
                s=round(time.time() - t0),
            )
    # SD's convention: scale the latents to unit variance for the diffusion model.
    with torch.no_grad():
        pixels = to_pixels([shapes.scene(TRAIN_SEED0 - 1 - i).image for i in range(64)])
        std = vae.encode(pixels).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out)
    log(work, stage="vae", scaling_factor=1.0 / std)


# --- stage 2: latents ------------------------------------------------------------------------


def encode_images(vae, images: list) -> torch.Tensor:
    """(B, 4, h, w) bf16: the VAE's posterior means of ``images``, scaled as the networks see them."""
    return (vae.encode(to_pixels(images)).latent_dist.mean * vae.config.scaling_factor).to(torch.bfloat16)


def encode_latents(work: Path, count: int) -> None:
    out = work / "latents.pt"
    if out.exists():
        print("latents: done already")
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    latents, masks, scenes = [], [], []
    t0 = time.time()
    with torch.no_grad():
        for start in range(0, count, 64):
            batch = [shapes.scene(TRAIN_SEED0 + i) for i in range(start, min(start + 64, count))]
            latents.append(encode_images(vae, [s.image for s in batch]))
            masks.append(object_masks(batch, latents[-1].shape[-1]))
            scenes += [{"background": s.background, "objects": [[o.color, o.shape] for o in s.objects]} for s in batch]
            if start % 3200 == 0:
                log(work, stage="latents", done=start, s=round(time.time() - t0))
    torch.save({"latents": torch.cat(latents), "masks": torch.cat(masks), "scenes": scenes}, out)


def encode_subsets(work: Path, count: int, seed: int) -> None:
    """Stage ``subsets``: the first ``count`` training scenes (at most the latents') re-rendered
    with a random part of their objects (each kept with probability ½, never all, possibly none)
    and the three empty backgrounds, encoded like the latents, to ``subsets.pt``: ``latents`` (count, 4, h, w) bf16,
    ``kept`` (the objects each keeps), ``backgrounds`` {name: (4, h, w)}. ``--exact-captions``
    pairs captions with them (:func:`training_caption`)."""
    out = work / "subsets.pt"
    if out.exists():
        print("subsets: done already")
        return
    from diffusers import AutoencoderKL

    count = min(count, len(torch.load(work / "latents.pt", mmap=True)["scenes"]))
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    rng = random.Random(seed)
    latents, kept = [], []
    with torch.no_grad():
        for start in range(0, count, 64):
            batch = []
            for i in range(start, min(start + 64, count)):
                full = shapes.scene(TRAIN_SEED0 + i)
                n = len(full.objects)
                keep = [j for j in range(n) if rng.random() < 0.5]
                if len(keep) == n:
                    keep.pop(rng.randrange(n))
                batch.append(shapes.render(tuple(full.objects[j] for j in keep), full.background).image)
                kept.append(keep)
            latents.append(encode_images(vae, batch))
        names = list(shapes.BACKGROUNDS)
        empty = encode_images(vae, [shapes.render((), name).image for name in names])
    torch.save({"latents": torch.cat(latents), "kept": kept, "backgrounds": dict(zip(names, empty, strict=True))}, out)


def object_masks(batch: list, size: int) -> torch.Tensor:
    """(B, MAX_OBJECTS, size, size) uint8: each object's area fraction per latent cell (0–255)."""
    out = torch.zeros(len(batch), MAX_OBJECTS, size, size)
    for i, s in enumerate(batch):
        exact = torch.from_numpy(s.masks).float()[:, None]  # (K, 1, H, W)
        out[i, : len(s.objects)] = F.adaptive_avg_pool2d(exact, size)[:, 0]
    return (out * 255).round().to(torch.uint8)


# --- stage 3: UNet + text encoder --------------------------------------------------------------


def training_caption(entry: dict, rng: random.Random, kept: list[int] | None = None) -> tuple[str, list[int], str]:
    """A caption for a scene, the indices of the objects it names (caption order) and the picture
    it goes with: ``"scene"``, ``"subset"`` (the scene with only ``kept``) or ``"empty"`` (its
    background alone).

    Full caption 55 %, short concept caption of every object 15 %, short caption of some of the
    objects 20 % (the form an edit's concept takes: "blue square" for one of three objects), empty
    (unconditional) 10 %. Without ``kept`` the part is a random subset and every caption goes with
    the whole scene (the others are there unnamed); with ``kept`` (exact captions, stage
    ``subsets``) the part is ``kept`` and goes with the picture of just it, and the empty caption
    with the empty background: a caption names exactly what is there.
    """
    objects = [shapes.ShapeObject(c, s, (0, 0, 0, 0)) for c, s in entry["objects"]]
    order = list(range(len(objects)))
    rng.shuffle(order)
    u = rng.random()
    if u < 0.1:
        return "", [], "scene" if kept is None else "empty"
    if u < 0.3:
        if kept is None:
            named = order[: rng.randint(1, len(order))]
            return shapes.short_caption([objects[i] for i in named]), named, "scene"
        named = [i for i in order if i in kept]
        return shapes.short_caption([objects[i] for i in named]) if named else "", named, "subset"
    if u < 0.45:
        return shapes.short_caption([objects[i] for i in order]), order, "scene"
    return shapes.caption([objects[i] for i in order], entry["background"]), order, "scene"


def caption_batch(
    chosen: list[dict], idx: torch.Tensor, x0: torch.Tensor, subsets: dict | None, rng: random.Random
) -> tuple[list[str], list[list[int]], torch.Tensor, list[bool]]:
    """Captions for a batch (:func:`training_caption`; exact ones, with each scene's ``kept``, where
    ``subsets`` is given): the captions, the objects each names, ``x0`` (B, 4, h, w) with the rows
    whose caption names a part swapped for the picture of just that part or of the empty
    background, and which rows still hold their whole scene."""
    x0 = x0.clone()
    captions, named, whole = [], [], []
    for row, (entry, i) in enumerate(zip(chosen, idx.tolist(), strict=True)):
        caption, names, source = training_caption(entry, rng, None if subsets is None else subsets["kept"][i])
        if source == "subset":
            x0[row] = subsets["latents"][i].float()
        elif source == "empty":
            x0[row] = subsets["backgrounds"][entry["background"]].float()
        captions.append(caption)
        named.append(names)
        whole.append(source == "scene")
    return captions, named, x0, whole


class GroundingProcessor:
    """Cross-attention computed with explicit probabilities, whose head mean (B, Q, L) is kept in
    ``store`` for the grounding loss; the output equals diffusers' ``AttnProcessor``."""

    def __init__(self, store: list[torch.Tensor]) -> None:
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        batch, q_len, _ = hidden_states.shape
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)  # (B·heads, Q, L)
        self.store.append(probs.view(batch, attn.heads, q_len, -1).float().mean(1))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def colour_token_ids(tokenizer) -> dict[str, int]:
    """The single CLIP token of each colour word (and a check that every shape word is one token)."""
    ids = {w: tokenizer(w).input_ids[1:-1] for w in (*shapes.COLORS, *shapes.SHAPES)}
    if any(len(v) != 1 for v in ids.values()):
        raise SystemExit(f"grounding needs one token per colour and shape word; got {ids}")
    return {c: ids[c][0] for c in shapes.COLORS}


def grounding_targets(
    ids: torch.Tensor, named: list[list[int]], entries: list[dict], masks: torch.Tensor, colour_ids: dict[str, int]
):
    """Token positions and masks for the grounding loss (TokenCompose-style, on exact masks).

    ``ids`` (B, L) token ids; ``named[b]`` the objects caption ``b`` names; ``masks`` (B, K, h, w)
    area fractions. Each named object's colour and shape tokens (single CLIP tokens, colour
    unique per scene, shape right after it) are grounded in that object's mask. Returns
    ``positions`` (B, T) long, ``targets`` (B, T, h, w) and ``valid`` (B, T) bool, T = 2·K.
    """
    b, k = masks.shape[:2]
    positions = torch.zeros(b, 2 * k, dtype=torch.long)
    targets = torch.zeros(b, 2 * k, *masks.shape[2:])
    valid = torch.zeros(b, 2 * k, dtype=torch.bool)
    for row, objects in enumerate(named):
        for slot, j in enumerate(objects):
            colour = colour_ids[entries[row]["objects"][j][0]]
            at = (ids[row] == colour).nonzero()[0, 0]
            positions[row, 2 * slot : 2 * slot + 2] = torch.stack([at, at + 1])
            targets[row, 2 * slot : 2 * slot + 2] = masks[row, j]
            valid[row, 2 * slot : 2 * slot + 2] = True
    return positions, targets, valid


def empty_region(masks: torch.Tensor, rng: random.Random, tries: int = 20) -> torch.Tensor:
    """Where an added object could go: an object-sized square (7–12 latent cells at 32², as
    :func:`shapes.random_objects` draws 28–48 px at 128) in the scene's empty space.

    ``masks`` (K, h, w) the present objects' area fractions. The square overlapping them least
    of ``tries`` random placements, with the objects cut out; the whole background when none
    leaves any empty cell. A random place per sample teaches an absent concept's attention to
    gather in one object-sized spot of the background (what an add needs) instead of spreading
    over all of it. Returns (h, w).
    """
    h, w = masks.shape[1:]
    background = (1 - masks.sum(0)).clamp(0, 1)
    best, best_mass = background, -1.0
    for _ in range(tries):
        side = rng.randint(h * 7 // 32, h * 3 // 8)
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        square = torch.zeros(h, w)
        square[y : y + side, x : x + side] = 1
        region = square * background
        mass = region.sum().item() / side**2
        if mass > best_mass:
            best, best_mass = region, mass
        if mass == 1.0:
            break
    return best if best.sum() > 0 else background


def mixed_absent_captions(
    entries: list[dict],
    masks: torch.Tensor,
    rng: random.Random,
    colour_ids: dict[str, int],
    tokenizer,
    region: str = "background",
    length: int = 77,
):
    """Captions naming a random subset of each scene's objects (maybe none) and one concept it
    lacks, in random order ("green circle and red square" for a scene with only a red square),
    with grounding targets: present objects' colour/shape tokens in their masks, the absent
    concept's in the background (``region="background"``) or in an object-sized empty spot
    (``"object"``, :func:`empty_region`); captions padded to ``length`` tokens. Returns ``ids``
    (B, L) and ``positions`` (B, T), ``targets`` (B, T, h, w), ``valid`` (B, T) as
    :func:`grounding_targets`, T = 2·(K + 1)."""
    k = masks.shape[1]
    captions, groundings = [], []
    for row, entry in enumerate(entries):
        present = [(c, s, masks[row, j]) for j, (c, s) in enumerate(entry["objects"])]
        rng.shuffle(present)
        named = present[: rng.randint(0, len(present))]
        colour = rng.choice([c for c in shapes.COLORS if c not in {c for c, _ in entry["objects"]}])
        background = (1 - masks[row].sum(0)).clamp(0, 1)
        target = empty_region(masks[row], rng) if region == "object" else background
        named.insert(rng.randint(0, len(named)), (colour, rng.choice(shapes.SHAPES), target))
        captions.append(" and ".join(f"{c} {s}" for c, s, _ in named))
        groundings.append(named)
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    ids = ids.input_ids
    positions = torch.zeros(len(entries), 2 * (k + 1), dtype=torch.long)
    targets = torch.zeros(len(entries), 2 * (k + 1), *masks.shape[2:])
    valid = torch.zeros(len(entries), 2 * (k + 1), dtype=torch.bool)
    for row, named in enumerate(groundings):
        for slot, (colour, _, target) in enumerate(named):
            at = (ids[row] == colour_ids[colour]).nonzero()[0, 0]
            positions[row, 2 * slot : 2 * slot + 2] = torch.stack([at, at + 1])
            targets[row, 2 * slot : 2 * slot + 2] = target
            valid[row, 2 * slot : 2 * slot + 2] = True
    return ids, positions, targets, valid


def absent_targets(
    entries: list[dict], masks: torch.Tensor, rng: random.Random, colour_ids: dict[str, int], tokenizer
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A concept each scene lacks — a colour not in it, any shape, in an edit's short form — with
    the scene's background as its target: what an added concept's attention should find (empty
    space, not the other objects). Returns ``ids`` (B, L) and, as :func:`grounding_targets`,
    ``positions`` (B, 2), ``targets`` (B, 2, h, w) and ``valid`` (B, 2)."""
    captions, positions = [], []
    for entry in entries:
        present = {c for c, _ in entry["objects"]}
        colour = rng.choice([c for c in shapes.COLORS if c not in present])
        captions.append(f"{colour} {rng.choice(shapes.SHAPES)}")
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    for row, caption in enumerate(captions):
        at = (ids[row] == colour_ids[caption.split()[0]]).nonzero()[0, 0]
        positions.append(torch.stack([at, at + 1]))
    background = (1 - masks.sum(1)).clamp(0, 1)  # (B, h, w)
    targets = background[:, None].expand(-1, 2, -1, -1)
    return ids, torch.stack(positions), targets, torch.ones(len(entries), 2, dtype=torch.bool)


def grounding_loss(maps: list[torch.Tensor], positions, targets, valid) -> tuple[torch.Tensor, torch.Tensor]:
    """Token loss (1 − attention mass inside the object) and pixel loss (BCE of the max-normalised
    map against the object's mask), averaged over grounded tokens and layers (TokenCompose, Eqs. 3–4).

    ``maps``: per layer (B, Q, L) head-mean attention, Q = h'·w'.
    """
    token_terms, pixel_terms = [], []
    weight = valid.float()
    count = weight.sum().clamp(min=1)
    for probs in maps:
        side = math.isqrt(probs.shape[1])
        m = F.adaptive_avg_pool2d(targets, side).flatten(2)  # (B, T, Q)
        a = probs.gather(2, positions[:, None, :].expand(-1, probs.shape[1], -1)).transpose(1, 2)  # (B, T, Q)
        inside = (a * m).sum(-1) / a.sum(-1).clamp(min=1e-8)
        token_terms.append(((1 - inside) * weight).sum() / count)
        norm = (a / a.amax(-1, keepdim=True).clamp(min=1e-8)).clamp(1e-6, 1 - 1e-6)
        bce = F.binary_cross_entropy(norm, m, reduction="none").mean(-1)
        pixel_terms.append((bce * weight).sum() / count)
    return torch.stack(token_terms).mean(), torch.stack(pixel_terms).mean()


def load_init(folder: Path, tokenizer):
    """UNet and text encoder from an exported model folder (fine-tuning), in fp32."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    return unet, text


def train_unet(
    work: Path,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    stop_after: int | None = None,
    init: Path | None = None,
    ground: tuple[float, float] = (0.0, 0.0),
    device: str = "cpu",
    ground_absent: float = 0.0,
    absent_captions: str = "alone",
    exact_captions: bool = False,
) -> None:
    """``steps`` sets the schedule; ``stop_after`` ends the run early (checkpoint kept, resumable).

    ``init`` fine-tunes an exported model instead of starting from scratch; ``ground`` weighs the
    token and pixel grounding losses on every cross-attention layer (0 = off); ``ground_absent``
    weighs the same losses for a concept half the batch lacks (an extra network call on half the
    batch, no denoising loss): ``absent_captions="alone"`` the concept alone, grounded in the
    background; ``"mixed"`` it beside some of the present objects in one caption
    (:func:`mixed_absent_captions`), grounded in an object-sized empty spot, the present ones in
    their masks. ``exact_captions`` pairs each caption with a picture of exactly what it names
    (stage ``subsets``; the scenes are drawn from those it covers).
    """
    from diffusers import DDPMScheduler

    tokenizer = tokenizer_at(work)
    colour_ids = colour_token_ids(tokenizer)
    data = torch.load(work / "latents.pt")
    latents, entries = data["latents"], data["scenes"]
    object_area = data.get("masks")
    subsets = torch.load(work / "subsets.pt") if exact_captions else None
    pool = len(latents) if subsets is None else len(subsets["kept"])
    if any(ground) and object_area is None:
        raise SystemExit("latents.pt has no object masks: delete it and rerun the latents stage")
    torch.manual_seed(seed)
    unet, text = load_init(init, tokenizer) if init else (unet_model(), text_model(tokenizer))
    unet.to(device), text.to(device)
    maps: list[torch.Tensor] = []
    if any(ground):
        unet.set_attn_processor(
            {
                name: GroundingProcessor(maps) if ".attn2." in name else proc
                for name, proc in unet.attn_processors.items()
            }
        )
    params = list(unet.parameters()) + list(text.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    start, ckpt = 0, work / "unet_checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt)
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        for e, v in zip(ema, state["ema"], strict=True):
            e.copy_(v)
        start = state["step"]
        torch.set_rng_state(state["torch_rng"])
        print(f"unet: resuming at step {start}")
    noise_sched = DDPMScheduler(**SD_SCHEDULE)
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight = (torch.clamp(snr, max=5.0) / snr).to(device)  # min-SNR-γ (γ = 5) for ε-prediction
    rng = random.Random(seed * 1000 + start)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    t0 = time.time()
    for step in range(start, min(steps, stop_after or steps)):
        idx = torch.randint(0, pool, (batch,))
        x0 = latents[idx].float().to(device)
        chosen = [entries[i] for i in idx.tolist()]
        captions, named, x0, whole = caption_batch(chosen, idx, x0, subsets, rng)
        ids = tokenizer(
            list(captions), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        xt = noise_sched.add_noise(x0.cpu(), noise.cpu(), t).to(device)
        maps.clear()
        with autocast:
            cond = text(ids.to(device)).last_hidden_state
            pred = unet(xt, t.to(device), cond).sample
        loss = ((pred.float() - noise) ** 2).mean((1, 2, 3))
        loss = (loss * weight[t.to(device)]).mean()
        token_loss = pixel_loss = torch.zeros((), device=device)
        if any(ground):
            area = object_area[idx].float() / 255
            positions, targets, valid = grounding_targets(ids, list(named), chosen, area, colour_ids)
            token_loss, pixel_loss = grounding_loss(maps, positions.to(device), targets.to(device), valid.to(device))
        total = loss + ground[0] * token_loss + ground[1] * pixel_loss
        token_abs = torch.zeros((), device=device)
        rows = [r for r in range(batch // 2) if whole[r]]  # the absent concept goes in whole scenes
        if ground_absent and rows:
            area = object_area[idx[rows]].float() / 255
            some = [chosen[r] for r in rows]
            if absent_captions == "mixed":
                absent = mixed_absent_captions(some, area, rng, colour_ids, tokenizer, "object")
            else:
                absent = absent_targets(some, area, rng, colour_ids, tokenizer)
            maps.clear()
            with autocast:
                unet(xt[rows], t[rows].to(device), text(absent[0].to(device)).last_hidden_state)
            token_abs, pixel_abs = grounding_loss(maps, *(a.to(device) for a in absent[1:]))
            total = total + ground_absent * (ground[0] * token_abs + ground[1] * pixel_abs)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_update(ema, params, step)
        if step % 50 == 0 or step == steps - 1:
            log(
                work,
                stage="unet",
                step=step,
                loss=round(loss.item(), 4),
                token=round(token_loss.item(), 4),
                pixel=round(pixel_loss.item(), 4),
                absent=round(token_abs.item(), 4),
                lr=sched.get_last_lr()[0],
                s=round(time.time() - t0),
            )
        if (step + 1) % 250 == 0 or step + 1 in (steps, stop_after):
            state = {
                "unet": unet.state_dict(),
                "text": text.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "ema": [e.cpu() for e in ema],
                "step": step + 1,
                "torch_rng": torch.get_rng_state(),
            }
            save_checkpoint(ckpt, state)


# --- stage 4: export -----------------------------------------------------------------------


def export(work: Path, out: Path) -> None:
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline

    tokenizer = tokenizer_at(work)
    state = torch.load(work / "unet_checkpoint.pt")
    unet, text = unet_model(), text_model(tokenizer)
    params = list(unet.parameters()) + list(text.parameters())
    with torch.no_grad():
        for p, e in zip(params, state["ema"], strict=True):
            p.copy_(e)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(work / "vae"),
        text_encoder=text.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DPMSolverMultistepScheduler(**SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(out)  # fp16 on disk (≈17 MB); the editor loads it as fp32 on a CPU
    print(f"exported step {state['step']} to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["vae", "latents", "subsets", "unet", "export", "all"])
    parser.add_argument("--work", type=Path, default=ROOT / "training" / "work")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "leditspp" / "demo" / "demo_model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--scenes", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--stop-after", type=int, help="end the UNet stage after this step (schedule unchanged)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, help="fine-tune this exported model (its VAE is kept as is)")
    parser.add_argument(
        "--ground",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("TOKEN", "PIXEL"),
        help="weights of the token and pixel grounding losses on the cross-attention maps",
    )
    parser.add_argument(
        "--ground-absent",
        type=float,
        default=0.0,
        help="weight (relative to --ground) of grounding a concept the scene lacks in its background",
    )
    parser.add_argument(
        "--absent-captions",
        choices=["alone", "mixed"],
        default="alone",
        help="the absent concept alone (grounded in the background) or among present objects in one caption "
        "(grounded in an object-sized empty spot)",
    )
    parser.add_argument(
        "--exact-captions",
        action="store_true",
        help="a caption names exactly what its picture holds: a part of a scene goes with the scene redrawn "
        "with just that part, the empty caption with the empty background (runs the subsets stage first)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all"):
        train_vae(args.work, args.vae_steps, 16, args.seed, args.init)
    if args.stage in ("latents", "all"):
        encode_latents(args.work, args.scenes)
    if args.stage == "subsets" or (args.exact_captions and args.stage in ("unet", "all")):
        encode_subsets(args.work, args.scenes, args.seed)
    if args.stage in ("unet", "all"):
        train_unet(
            args.work,
            args.steps,
            args.batch,
            args.lr,
            args.seed,
            args.stop_after,
            args.init,
            tuple(args.ground),
            args.device,
            args.ground_absent,
            args.absent_captions,
            args.exact_captions,
        )
    if args.stage in ("export", "all"):
        export(args.work, args.out)


if __name__ == "__main__":
    main()
