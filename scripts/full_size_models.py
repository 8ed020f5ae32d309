"""Full-size model architectures with random weights, built from the configs in scripts/configs/
(no downloads): what scripts/bench_gpu times the real pipeline with.

    unet = build_unet()                       # Stable Diffusion 1.5's UNet, 859.5M parameters
    inp = build_unet(inpainting=True)         # its 9-channel inpainting UNet, 859.5M
    vae, te = build_vae(), build_text_encoder()   # 83.7M, 123.1M
    depth = build_depth()                     # Depth Anything V2 Large (metric head), 335.3M
    with torch.device("meta"): build_unet()   # the architecture without memory (parameter counts)
    paths = write_models(root, device="cuda", dtype=torch.float16)   # folders the engine loads

The configs hold the published architectures' values (diffusers' config.json of
stable-diffusion-v1-5 and stable-diffusion-inpainting, CLIP ViT-L/14's text tower, the Depth
Anything V2 Large conversion); DOCUMENTED holds the parameter counts those models publish.
Random weights paint noise and measure noise: the figures are about time and memory, never
content. The tokenizer is the tests' byte-level one (tests/helpers/tiny_models.py: no vocabulary
file to download); its ids are a subset of the text encoder's 49408.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"
# published parameter counts (the models' cards and the diffusers/transformers checkpoints)
DOCUMENTED = {"unet": 859.52e6, "inpaint_unet": 859.54e6, "vae": 83.65e6, "text_encoder": 123.06e6,
              "depth": 335.3e6}
SEED = 0


def config(name: str) -> dict:
    """scripts/configs/<name>.json without its "_" keys (class name, comment)."""
    raw = json.loads((CONFIGS / f"{name}.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_unet(inpainting: bool = False):
    """SD 1.5's UNet2DConditionModel (in_channels 4), or its inpainting UNet (9)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(config("sd15_inpaint_unet" if inpainting else "sd15_unet"))


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config("sd15_vae"))


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**config("sd15_text_encoder")))


def build_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(config("sd15_scheduler"))


def build_depth(redraw: bool = True):
    """Depth Anything V2 Large with its metric head (max depth 80 m). redraw: LeCun-normal
    weights (as tests/helpers/tiny_models.build_tiny_depth: transformers' default init predicts a
    constant depth map, which no depth fit can use); skipped on the meta device."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    cfg = config("depth_anything_v2_large")
    cfg.pop("processor")
    backbone = dict(cfg.pop("backbone_config"))
    backbone.pop("model_type", None)
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(backbone_config=Dinov2Config(**backbone), **cfg))
    if redraw and next(model.parameters()).device.type != "meta":
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(SEED)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, float(p[0].numel()) ** -0.5, generator=gen)
    return model.eval()


def depth_processor():
    from transformers import DPTImageProcessor

    return DPTImageProcessor(**config("depth_anything_v2_large")["processor"])


def tokenizer():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.tiny_models import tiny_clip_tokenizer

    return tiny_clip_tokenizer()


@dataclass(frozen=True)
class ModelFolders:
    """The three folders write_models saved, by the engine's roles."""
    text2img: Path
    inpaint: Path
    depth: Path


def write_models(root, *, device="cpu", dtype=torch.float16) -> ModelFolders:
    """Build every full-size model on device with random weights, cast to dtype, and save them
    under root as the folders the diffusers engine loads (sd15/, sd15-inpainting/, depth/:
    save_pretrained, safetensors). Reuses folders a previous call finished (a "complete" marker)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    root = Path(root)
    out = ModelFolders(root / "sd15", root / "sd15-inpainting", root / "depth-anything-v2-large")
    if all((p / "complete").is_file() for p in (out.text2img, out.inpaint, out.depth)):
        return out
    torch.manual_seed(SEED)
    with torch.device(device):
        te, vae, tok, sched = build_text_encoder().to(dtype), build_vae().to(dtype), tokenizer(), build_scheduler()
        common = dict(vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched, safety_checker=None,
                      feature_extractor=None, requires_safety_checker=False)
        StableDiffusionPipeline(unet=build_unet().to(dtype), **common).save_pretrained(out.text2img)
        (out.text2img / "complete").write_text("ok\n")
        StableDiffusionInpaintPipeline(unet=build_unet(inpainting=True).to(dtype), **common).save_pretrained(out.inpaint)
        (out.inpaint / "complete").write_text("ok\n")
        build_depth().to(dtype).save_pretrained(out.depth)
        depth_processor().save_pretrained(out.depth)
        (out.depth / "complete").write_text("ok\n")
    return out
