"""SDDenoiser: Stable Diffusion's components behind the small interface zoom.py samples with.

    d = SDDenoiser.from_pretrained(path)          # or SDDenoiser.from_pipeline(pipe)
    cond, uncond = d.encode_prompts(prompts, "")  # [N, T, D] each, for classifier-free guidance
    eps = d.predict_eps(x_t, t, cond)             # x_t: [N, C, h, w] → ε: [N, C, h, w] (batched)
    z = d.encode(images); images = d.decode(z)    # [N, 3, H, W] in [0, 1] ↔ [N, C, H/s, W/s]

Latents are the VAE's scaled latents (× scaling_factor), spatially aligned with the pixels at
1/vae_scale_factor (8 for Stable Diffusion). predict_eps always returns ε: a v-prediction UNet
(SD 2.x) is converted with ε = √ᾱ_t v + √(1−ᾱ_t) x_t. alphas_cumprod: [T] ᾱ of the training
schedule, taken from the pipeline's scheduler config (the sampler itself lives in zoom.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch


class SDDenoiser:
    """An adapter over diffusers components (tokenizer, text_encoder, unet, vae, scheduler)."""

    def __init__(self, tokenizer, text_encoder, unet, vae, scheduler, *, device=None, dtype=None):
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"unet: in_channels {unet.config.in_channels} ≠ the VAE's latent_channels "
                f"{vae.config.latent_channels}; the zoom needs a text-to-image UNet, not an inpainting one")
        self.tokenizer, self.text_encoder, self.unet, self.vae = tokenizer, text_encoder, unet, vae
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else unet.device
        self.dtype = dtype if dtype is not None else unet.dtype
        for m in (text_encoder, unet, vae):
            if m.device != self.device or m.dtype != self.dtype:
                m.to(self.device, self.dtype)
            m.eval()
            m.requires_grad_(False)
        self.alphas_cumprod = torch.as_tensor(np.asarray(scheduler.alphas_cumprod), dtype=torch.float64)
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"scheduler: prediction_type {self.prediction_type!r} is not supported "
                             "(epsilon or v_prediction)")
        self.latent_channels = int(vae.config.latent_channels)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.get("scaling_factor", 0.18215))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe, **kw) -> "SDDenoiser":
        """From a loaded StableDiffusionPipeline (or anything with the same five components)."""
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae, pipe.scheduler, **kw)

    @classmethod
    def from_pretrained(cls, path, *, device="cpu", dtype=torch.float32) -> "SDDenoiser":
        """From a diffusers Stable Diffusion folder (model_index.json + component subfolders)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = Path(path)
        if not (path / "model_index.json").is_file():
            raise ValueError(f"model: {path} is not a diffusers Stable Diffusion folder "
                             "(no model_index.json)")
        return cls(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
                   CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype),
                   UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype),
                   AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype),
                   DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
                   device=device, dtype=dtype)

    # -- text ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative: str | list[str] = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings for CFG: (cond [N, T, D], uncond [N, T, D]); negative: one or per prompt."""
        negs = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        if len(negs) != len(prompts):
            raise ValueError(f"negative: need 1 or {len(prompts)} negative prompts, got {len(negs)}")
        emb = self._embed(list(prompts) + negs)
        return emb[:len(prompts)], emb[len(prompts):]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0].to(torch.float32)

    # -- UNet ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_eps(self, x_t: torch.Tensor, t: int, cond: torch.Tensor,
                    batch_size: Optional[int] = None) -> torch.Tensor:
        """ε_θ(x_t; t, y): x_t: [N, C, h, w], cond: [N, T, D] → [N, C, h, w] float32, in batches."""
        if x_t.shape[0] != cond.shape[0]:
            raise ValueError(f"cond: {cond.shape[0]} embeddings for {x_t.shape[0]} latents")
        n = x_t.shape[0]
        bs = n if not batch_size else max(1, int(batch_size))
        out = []
        for a in range(0, n, bs):
            x = x_t[a:a + bs].to(self.device, self.dtype)
            c = cond[a:a + bs].to(self.device, self.dtype)
            tt = torch.full((x.shape[0],), int(t), device=self.device, dtype=torch.long)
            out.append(self.unet(x, tt, encoder_hidden_states=c).sample.to(torch.float32))
        e = torch.cat(out)
        if self.prediction_type == "v_prediction":
            ab = float(self.alphas_cumprod[int(t)])
            e = ab ** 0.5 * e + (1.0 - ab) ** 0.5 * x_t.to(e)
        return e

    # -- VAE ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """images: [N, 3, H, W] tensor or [N, H, W, 3] / [H, W, 3] numpy in [0, 1] → latents [N, C, H/s, W/s]
        (the posterior mean, × scaling_factor)."""
        x = images
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.asarray(x, np.float32))
            x = (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2)
        x = (2.0 * x - 1.0).to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.mean.to(torch.float32) * self.scaling_factor

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """latents: [N, C, h, w] → images [N, 3, h·s, w·s] float32 in [0, 1] (clamp=False: unclamped,
        differentiable when grad is enabled)."""
        x = self.vae.decode((latents / self.scaling_factor).to(self.device, self.dtype)).sample
        x = x.to(torch.float32) / 2.0 + 0.5
        return x.clamp(0.0, 1.0) if clamp else x
