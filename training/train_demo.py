"""Train the built-in demo model on the shapes world (CPU-friendly, reproducible, resumable).

Stages, each resumable from ``--work`` (default ``training/work``, git-ignored):

1. ``vae``     — a factor-4 ``AutoencoderKL`` (128 px → 32×32×4) on random 64 px crops of scenes,
                 MSE + a small KL term; the latent scaling factor is set to 1/std of the latents.
2. ``latents`` — render and encode the training scenes (seeds from ``TRAIN_SEED0`` on; the
                 evaluation uses seeds below it) to the posterior means, once.
3. ``unet``    — a ``UNet2DConditionModel`` with cross-attention at ½ and ¼ latent resolution,
                 and a from-scratch ``CLIPTextModel`` (real CLIP tokenizer), trained jointly:
                 ε-prediction on SD's scaled-linear schedule, min-SNR-5 weighting, 10 % caption
                 dropout (for classifier-free guidance), 20 % short concept captions ("red circle
                 and blue square", the form edits use), EMA of the weights, bf16 autocast on CPU.
4. ``export``  — the EMA weights as a diffusers ``StableDiffusionPipeline`` folder
                 (``src/leditspp/demo_model`` by default).

    python training/train_demo.py all            # every stage, resuming where it stopped
    python training/train_demo.py unet --steps 6000

About 80 minutes on 2 CPU cores for the defaults (see the README, "The demo model").
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

from leditspp import shapes
from leditspp.testing import SD_SCHEDULE, write_clip_tokenizer_files

TRAIN_SEED0 = 1_000_000  # training scenes use seeds ≥ this; evaluation seeds stay below
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


# --- stage 1: autoencoder ---------------------------------------------------------------------


def train_vae(work: Path, steps: int, batch: int, seed: int) -> None:
    out = work / "vae"
    if (out / "config.json").exists():
        print("vae: done already")
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


def encode_latents(work: Path, count: int) -> None:
    out = work / "latents.pt"
    if out.exists():
        print("latents: done already")
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    latents, scenes = [], []
    t0 = time.time()
    with torch.no_grad():
        for start in range(0, count, 64):
            batch = [shapes.scene(TRAIN_SEED0 + i) for i in range(start, min(start + 64, count))]
            mean = vae.encode(to_pixels([s.image for s in batch])).latent_dist.mean
            latents.append((mean * vae.config.scaling_factor).to(torch.bfloat16))
            scenes += [{"background": s.background, "objects": [[o.color, o.shape] for o in s.objects]} for s in batch]
            if start % 3200 == 0:
                log(work, stage="latents", done=start, s=round(time.time() - t0))
    torch.save({"latents": torch.cat(latents), "scenes": scenes}, out)


# --- stage 3: UNet + text encoder --------------------------------------------------------------


def training_caption(entry: dict, rng: random.Random) -> str:
    """Full caption 70 %, short concept caption 20 %, empty (unconditional) 10 %."""
    objects = [shapes.ShapeObject(c, s, (0, 0, 0, 0)) for c, s in entry["objects"]]
    rng.shuffle(objects)
    u = rng.random()
    if u < 0.1:
        return ""
    if u < 0.3:
        return shapes.short_caption(objects)
    return shapes.caption(objects, entry["background"])


def train_unet(work: Path, steps: int, batch: int, lr: float, seed: int, stop_after: int | None = None) -> None:
    """``steps`` sets the schedule; ``stop_after`` ends the run early (checkpoint kept, resumable)."""
    from diffusers import DDPMScheduler

    tokenizer = tokenizer_at(work)
    data = torch.load(work / "latents.pt")
    latents, entries = data["latents"], data["scenes"]
    torch.manual_seed(seed)
    unet, text = unet_model(), text_model(tokenizer)
    params = list(unet.parameters()) + list(text.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = min(300, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
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
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-γ (γ = 5) for ε-prediction
    rng = random.Random(seed * 1000 + start)
    t0 = time.time()
    for step in range(start, min(steps, stop_after or steps)):
        idx = torch.randint(0, len(latents), (batch,))
        x0 = latents[idx].float()
        captions = [training_caption(entries[i], rng) for i in idx.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        xt = noise_sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cond = text(ids).last_hidden_state
            pred = unet(xt, t, cond).sample
        loss = ((pred.float() - noise) ** 2).mean((1, 2, 3))
        loss = (loss * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        if step % 50 == 0 or step == steps - 1:
            log(
                work,
                stage="unet",
                step=step,
                loss=round(loss.item(), 4),
                lr=sched.get_last_lr()[0],
                s=round(time.time() - t0),
            )
        if (step + 1) % 250 == 0 or step + 1 in (steps, stop_after):
            state = {
                "unet": unet.state_dict(),
                "text": text.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "ema": ema,
                "step": step + 1,
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)


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
    parser.add_argument("stage", choices=["vae", "latents", "unet", "export", "all"])
    parser.add_argument("--work", type=Path, default=ROOT / "training" / "work")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "leditspp" / "demo_model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--scenes", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--stop-after", type=int, help="end the UNet stage after this step (schedule unchanged)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all"):
        train_vae(args.work, args.vae_steps, 16, args.seed)
    if args.stage in ("latents", "all"):
        encode_latents(args.work, args.scenes)
    if args.stage in ("unet", "all"):
        train_unet(args.work, args.steps, args.batch, args.lr, args.seed, args.stop_after)
    if args.stage in ("export", "all"):
        export(args.work, args.out)


if __name__ == "__main__":
    main()
