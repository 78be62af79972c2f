"""Train ``demo-flow``: the flow-matching demo model (SD3-shaped MMDiT) on the shapes world (issue 23).

It shares the UNet demo's world, autoencoder and training scenes, so the two demo models are
compared on equal terms (``leditspp eval shapes --model demo-flow``):

1. ``latents`` — the shipped demo model's VAE (factor 4, 4 channels) encodes the training scenes,
   with each object's exact mask on the latent grid (``train_demo.py``'s stage, shared).
2. ``flow``    — a small ``SD3Transformer2DModel`` (patch 2: a 16×16 token grid for 128 px, joint
   attention with RMS q/k norms, as SD3.5) and two CLIP text encoders initialised from the UNet
   demo's, trained jointly with rectified flow: ``x_σ = (1 − σ)·x0 + σ·ε``, target ``v = ε − x0``,
   σ logit-normal (SD3, Esser et al. 2024). TokenCompose-style grounding (``--ground TOKEN PIXEL``)
   acts on every block's joint attention, image queries → a concept's colour and shape token
   columns (softmax over all keys, as the editor's mask M¹ reads it): the named objects' tokens
   must put their mass inside their masks. ``--ground-absent W`` adds, on half the batch, a second
   call whose caption mixes some present objects with a concept the scene lacks (an edit's
   "+green circle" on a picture with a red square): present tokens grounded in their masks, the
   absent concept in the background; no denoising loss on that call.
3. ``export``  — the EMA weights as a ``StableDiffusion3Pipeline`` folder (fp16, no T5;
   ``src/leditspp/demo/demo_flow_model`` by default; a ``leditspp.json`` already there stays).

    python training/train_demo_flow.py all --steps 3000 --ground 0.02 0.01 --ground-absent 1
    python training/train_demo_flow.py flow --steps 3000 --stop-after 500   # resumable in pieces
    python training/train_demo_flow.py flow --init src/leditspp/demo/demo_flow_model --steps 1500 --work /tmp/w
                                                        # continue the shipped weights elsewhere

Captions are padded to 32 CLIP tokens and the model has no T5 (``max_sequence_length`` 0, which
the folder's ``leditspp.json`` declares): 256 image + 32 text tokens per row.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import train_demo as unet_demo

from leditspp.demo import shapes

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "src" / "leditspp" / "demo" / "demo_model"
TEXT_TOKENS = 32  # CLIP positions a caption is padded to (the shapes captions need < 20)
SHIFT = 1.0  # the scheduler's static shift: 256 tokens need none (FLUX's μ(256) ≈ 0.5 → 1.65)


def transformer_model():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=shapes.SIZE // 4,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=6,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=128,  # CLIP-L ⊕ CLIP-G widths (64 + 64); no T5 padding
        caption_projection_dim=128,
        pooled_projection_dim=128,
        pos_embed_max_size=64,  # up to 64×64 patches: 512 px images
        qk_norm="rms_norm",
    )


def text_models(work: Path):
    """Two projected CLIP text encoders initialised from the UNet demo's (same tokenizer)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    encoders = []
    for _ in range(2):
        config = CLIPTextConfig.from_pretrained(DEMO / "text_encoder", projection_dim=64)
        model = CLIPTextModelWithProjection(config).float()  # the config records fp16
        if not (work / "demo_text.pt").exists():
            from transformers import CLIPTextModel

            demo = CLIPTextModel.from_pretrained(DEMO / "text_encoder", dtype=torch.float32)
            torch.save(demo.state_dict(), work / "demo_text.pt")
        model.text_model.load_state_dict(torch.load(work / "demo_text.pt"))  # the projection starts random
        encoders.append(model)
    return encoders


def tokenizer_at(work: Path):
    from transformers import CLIPTokenizer

    folder = work / "tokenizer"
    if not (folder / "vocab.json").exists():
        CLIPTokenizer.from_pretrained(DEMO / "tokenizer", model_max_length=TEXT_TOKENS).save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def encode(texts, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``StableDiffusion3Pipeline`` without T5: both CLIPs' penultimate states concatenated
    (B, L, 128) and their projected embeddings (B, 128)."""
    outs = [t(ids, output_hidden_states=True) for t in texts]
    return torch.cat([o.hidden_states[-2] for o in outs], -1), torch.cat([o[0] for o in outs], -1)


class GroundingJointProcessor:
    """SD3's joint attention with explicit probabilities (output equal to ``JointAttnProcessor2_0``);
    the head mean of image queries → text keys, (B, Q, L), goes to ``store``."""

    def __init__(self, store: list[torch.Tensor]) -> None:
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        b, n_image, _ = hidden_states.shape

        def heads(x):
            return x.view(b, x.shape[1], attn.heads, -1).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        cq = heads(attn.add_q_proj(encoder_hidden_states))
        ck = heads(attn.add_k_proj(encoder_hidden_states))
        cv = heads(attn.add_v_proj(encoder_hidden_states))
        q, k = attn.norm_q(q), attn.norm_k(k)
        cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2)
        probs = (q @ k.transpose(-1, -2) * attn.scale).float().softmax(-1).to(q.dtype)
        self.store.append(probs[:, :, :n_image, n_image:].float().mean(1))
        out = (probs @ v).transpose(1, 2).reshape(b, -1, attn.heads * q.shape[-1])
        image, context = out[:, :n_image], out[:, n_image:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        return attn.to_out[1](attn.to_out[0](image)), context


def load_init(folder: Path):
    """The transformer and both text encoders of an exported ``demo-flow`` folder, in fp32."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch.float32)
    texts = [
        CLIPTextModelWithProjection.from_pretrained(folder / name, dtype=torch.float32).float()
        for name in ("text_encoder", "text_encoder_2")
    ]
    return transformer.float(), texts


def sample_sigmas(batch: int) -> torch.Tensor:
    """σ ∈ (0, 1): logit-normal(0, 1) (SD3's "rf/lognorm"), shifted as the scheduler shifts."""
    u = torch.sigmoid(torch.randn(batch))
    return SHIFT * u / (1 + (SHIFT - 1) * u)


def train_flow(
    work: Path,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    stop_after: int | None,
    ground: tuple[float, float],
    ground_absent: float,
    device: str,
    init: Path | None = None,
    absent_region: str = "background",
    exact_captions: bool = False,
) -> None:
    """``steps`` sets the schedule; ``stop_after`` ends the run early (checkpoint kept, resumable);
    ``init`` continues from an exported model folder (the shipped weights) on another machine;
    ``exact_captions`` pairs each caption with a picture of exactly what it names (the UNet demo
    script's ``subsets`` stage, run first)."""
    tokenizer = tokenizer_at(work)
    colour_ids = unet_demo.colour_token_ids(tokenizer)
    data = torch.load(work / "latents.pt")
    latents, entries, object_area = data["latents"], data["scenes"], data["masks"]
    subsets = torch.load(work / "subsets.pt") if exact_captions else None
    pool = len(latents) if subsets is None else len(subsets["kept"])
    torch.manual_seed(seed)
    transformer, texts = load_init(init) if init else (transformer_model(), text_models(work))
    transformer.to(device), [t.to(device) for t in texts]
    maps: list[torch.Tensor] = []
    if any(ground):
        transformer.set_attn_processor(GroundingJointProcessor(maps))
    params = list(transformer.parameters()) + [p for t in texts for p in t.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, unet_demo.warmup_cosine(steps))
    start, ckpt = 0, work / "flow_checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt)
        transformer.load_state_dict(state["transformer"])
        for t, s in zip(texts, state["texts"], strict=True):
            t.load_state_dict(s)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        for e, v in zip(ema, state["ema"], strict=True):
            e.copy_(v)
        start = state["step"]
        torch.set_rng_state(state["torch_rng"])
        print(f"flow: resuming at step {start}")
    rng = random.Random(seed * 1000 + start)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    t0 = time.time()
    for step in range(start, min(steps, stop_after or steps)):
        idx = torch.randint(0, pool, (batch,))
        x0 = latents[idx].float().to(device)
        chosen = [entries[i] for i in idx.tolist()]
        captions, named, x0, whole = unet_demo.caption_batch(chosen, idx, x0, subsets, rng)
        ids = tokenizer(
            list(captions), padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids
        sigma = sample_sigmas(batch).to(device)
        noise = torch.randn_like(x0)
        s = sigma[:, None, None, None]
        xt = (1 - s) * x0 + s * noise
        maps.clear()
        with autocast:
            embeds, pooled = encode(texts, ids.to(device))
            pred = transformer(xt, embeds, pooled, sigma * 1000, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise - x0)
        token_loss = pixel_loss = token_abs = torch.zeros((), device=device)
        if any(ground):
            area = object_area[idx].float() / 255
            positions, targets, valid = unet_demo.grounding_targets(ids, list(named), chosen, area, colour_ids)
            token_loss, pixel_loss = unet_demo.grounding_loss(
                maps, positions.to(device), targets.to(device), valid.to(device)
            )
        total = loss + ground[0] * token_loss + ground[1] * pixel_loss
        rows = [r for r in range(batch // 2) if whole[r]]  # the absent concept goes in whole scenes
        if ground_absent and rows:
            area = object_area[idx[rows]].float() / 255
            mixed = unet_demo.mixed_absent_captions(
                [chosen[r] for r in rows], area, rng, colour_ids, tokenizer, absent_region, TEXT_TOKENS
            )
            maps.clear()
            with autocast:
                embeds, pooled = encode(texts, mixed[0].to(device))
                transformer(xt[rows], embeds, pooled, sigma[rows] * 1000, return_dict=False)
            token_abs, pixel_abs = unet_demo.grounding_loss(maps, *(a.to(device) for a in mixed[1:]))
            total = total + ground_absent * (ground[0] * token_abs + ground[1] * pixel_abs)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        unet_demo.ema_update(ema, params, step)
        if step % 25 == 0 or step == steps - 1:
            unet_demo.log(
                work,
                stage="flow",
                step=step,
                loss=round(loss.item(), 4),
                token=round(token_loss.item(), 4),
                pixel=round(pixel_loss.item(), 4),
                absent=round(token_abs.item(), 4),
                lr=sched.get_last_lr()[0],
                s=round(time.time() - t0),
            )
        if (step + 1) % 100 == 0 or step + 1 in (steps, stop_after):
            state = {
                "transformer": transformer.state_dict(),
                "texts": [t.state_dict() for t in texts],
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "ema": [e.cpu() for e in ema],
                "step": step + 1,
                "torch_rng": torch.get_rng_state(),
            }
            unet_demo.save_checkpoint(ckpt, state)


def export(work: Path, out: Path) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    tokenizer = tokenizer_at(work)
    state = torch.load(work / "flow_checkpoint.pt")
    transformer, texts = transformer_model(), text_models(work)
    params = list(transformer.parameters()) + [p for t in texts for p in t.parameters()]
    with torch.no_grad():
        for p, e in zip(params, state["ema"], strict=True):
            p.copy_(e)
    vae = AutoencoderKL.from_pretrained(work / "vae")
    vae.register_to_config(shift_factor=0.0)  # the UNet demo's latents have none; SD3's pipeline reads it
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        vae=vae,
        text_encoder=texts[0].eval(),
        tokenizer=tokenizer,
        text_encoder_2=texts[1].eval(),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.to(torch.float16).save_pretrained(out)
    # diffusers writes no entry for the absent components; loading needs them declared as absent
    index = json.loads((out / "model_index.json").read_text())
    for name in ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor"):
        index.setdefault(name, [None, None])
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"exported step {state['step']} to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["latents", "flow", "export", "all"])
    parser.add_argument("--work", type=Path, default=ROOT / "training" / "work_flow")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "leditspp" / "demo" / "demo_flow_model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--stop-after", type=int, help="end the flow stage after this step (schedule unchanged)")
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ground", type=float, nargs=2, default=(0.02, 0.01), metavar=("TOKEN", "PIXEL"))
    parser.add_argument("--ground-absent", type=float, default=1.0)
    parser.add_argument(
        "--absent-region",
        choices=["background", "object"],
        default="background",
        help="where the absent concept is grounded: all background, or an object-sized empty spot",
    )
    parser.add_argument(
        "--exact-captions",
        action="store_true",
        help="a caption names exactly what its picture holds (runs the UNet demo script's subsets stage first)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--init", type=Path, help="continue from an exported model folder (e.g. the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("latents", "all"):
        unet_demo.train_vae(args.work, 0, 0, args.seed, init=DEMO)
        unet_demo.encode_latents(args.work, args.scenes)
    if args.exact_captions and args.stage in ("flow", "all"):
        unet_demo.encode_subsets(args.work, args.scenes, args.seed)
    if args.stage in ("flow", "all"):
        train_flow(
            args.work,
            args.steps,
            args.batch,
            args.lr,
            args.seed,
            args.stop_after,
            tuple(args.ground),
            args.ground_absent,
            args.device,
            args.init,
            args.absent_region,
            args.exact_captions,
        )
    if args.stage in ("export", "all"):
        export(args.work, args.out)


if __name__ == "__main__":
    main()
