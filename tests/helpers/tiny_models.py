"""Tiny random-weight models for tests: real diffusers/transformers folders, built from configs.

    sd = build_tiny_sd(tmp_dir)                      # StableDiffusionPipeline.from_pretrained(sd) loads it
    inp = build_tiny_sd(tmp_dir, inpainting=True)    # 9-channel UNet, StableDiffusionInpaintPipeline
    depth = build_tiny_depth(tmp_dir)                # AutoModelForDepthEstimation / AutoImageProcessor

Each folder is written once with save_pretrained (idempotent: a finished folder is reused, so a
session-scoped fixture or several tests can share one root) and then loaded by the real loading
code. The models are tiny (a few hundred kB) and run in milliseconds on CPU. They paint noise, not
pictures: tests assert shapes, masks, determinism and progress, never content.

Needs the backend environment (torch, diffusers, transformers); imports them lazily so the module
itself can be imported anywhere.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

SEED = 0
_DONE = ".tiny_model_complete"  # written last: a folder without it is rebuilt


def _finished(path: Path) -> bool:
    return (path / _DONE).is_file()


def _publish(tmp: Path, path: Path) -> Path:
    """Move a fully written tmp folder to path (atomic rename; another builder may have won)."""
    (tmp / _DONE).write_text("ok\n")
    try:
        os.replace(tmp, path)
    except OSError:  # path exists (a concurrent builder finished first, or a stale partial folder)
        if not _finished(path):
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def tiny_clip_tokenizer():
    """A CLIPTokenizer whose vocabulary is every byte-level character (alone and word-final).

    With transformers 5 the vocabulary is passed as objects (vocab=, merges=); no merges, so every
    character is one token. Vocabulary size: 3 specials + 2 × 256 = 515.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _sd_components(inpainting: bool):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    # four down blocks → the VAE downsamples ×8 (three 2× steps), like SD's; latents have 4 channels
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=9 if inpainting else 4, out_channels=4,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_tiny_sd(root, *, inpainting: bool = False) -> Path:
    """A tiny Stable Diffusion folder under root (``tiny-sd`` or ``tiny-sd-inpainting``) → its path.

    UNet2DConditionModel (in_channels 4, or 9 = latents + mask + masked-image latents for an
    inpainting checkpoint), AutoencoderKL (4 latent channels, ×8 downsampling), CLIPTextModel +
    CLIPTokenizer, a DDIM scheduler and model_index.json, saved with the pipeline's save_pretrained
    so ``StableDiffusionPipeline.from_pretrained(path)`` (or the Inpaint pipeline) loads it.
    """
    root = Path(root)
    path = root / ("tiny-sd-inpainting" if inpainting else "tiny-sd")
    if _finished(path):
        return path
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=root))
    cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = cls(**_sd_components(inpainting), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.save_pretrained(tmp, safe_serialization=True)
    return _publish(tmp, path)


def build_tiny_depth(root, *, metric: bool = True) -> Path:
    """A tiny Depth Anything (V2-style, metric head) folder under root (``tiny-depth``) → its path.

    DepthAnythingForDepthEstimation over a 2-layer Dinov2 backbone (hidden 16, patch 14) plus its
    DPTImageProcessor, saved so AutoModelForDepthEstimation / AutoImageProcessor.from_pretrained load
    it. The processor resizes to about 56×56 (aspect kept, multiples of 14) so a forward pass takes
    milliseconds. Weights are re-drawn LeCun-normal so the predicted depth (metric: 0..20 m) varies with
    the image instead of being constant.
    """
    root = Path(root)
    path = root / ("tiny-depth" if metric else "tiny-depth-relative")
    if _finished(path):
        return path
    import torch
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config,
                              DPTImageProcessor)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=root))
    torch.manual_seed(SEED)
    backbone = Dinov2Config(
        image_size=56, patch_size=14, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, mlp_ratio=2, out_features=["stage1", "stage2"],
        reshape_hidden_states=False)
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=16,
        reassemble_factors=[2, 1], neck_hidden_sizes=[8, 16], fusion_hidden_size=8,
        head_hidden_size=8, depth_estimation_type="metric" if metric else "relative",
        max_depth=20 if metric else 1)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # LeCun-normal weights: the default init predicts a constant depth map
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, float(p[0].numel()) ** -0.5)
    model.save_pretrained(tmp, safe_serialization=True)
    processor = DPTImageProcessor(
        do_resize=True, size={"height": 56, "width": 56}, keep_aspect_ratio=True,
        ensure_multiple_of=14, do_rescale=True, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False)
    processor.save_pretrained(tmp)
    return _publish(tmp, path)


def build_all(root) -> dict:
    """Every tiny model under root → {"text2img", "inpaint", "depth"} paths (the engine's roles)."""
    return {"text2img": str(build_tiny_sd(root)),
            "inpaint": str(build_tiny_sd(root, inpainting=True)),
            "depth": str(build_tiny_depth(root))}


def model_env(root) -> dict:
    """Environment variables that point the diffusers engine at the tiny models under root."""
    paths = build_all(root)
    return {"ZOOMSCAPE_TEXT2IMG_MODEL": paths["text2img"], "ZOOMSCAPE_INPAINT_MODEL": paths["inpaint"],
            "ZOOMSCAPE_DEPTH_MODEL": paths["depth"], "HF_HUB_OFFLINE": "1"}


if __name__ == "__main__":  # python tests/helpers/tiny_models.py DIR → builds and prints the paths
    import sys

    print(json.dumps(build_all(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()), indent=1))
