"""scripts/bench_gpu's model builders (scripts/full_size_models.py): the full-size architectures
from the committed configs have the parameter counts the published models document. Built on the
meta device (no memory, a few seconds): the counts come from diffusers'/transformers' own classes."""
import pytest
import torch

from scripts import full_size_models as fsm

# the published figures (model cards / checkpoints), in millions of parameters
PUBLISHED = {"unet": 859.52, "inpaint_unet": 859.54, "vae": 83.65, "text_encoder": 123.06, "depth": 335.3}


@pytest.fixture(scope="module")
def models():
    with torch.device("meta"):
        return {"unet": fsm.build_unet(), "inpaint_unet": fsm.build_unet(inpainting=True),
                "vae": fsm.build_vae(), "text_encoder": fsm.build_text_encoder(), "depth": fsm.build_depth()}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_models(models, name):
    n = fsm.parameter_count(models[name])
    assert abs(n / (PUBLISHED[name] * 1e6) - 1) < 0.01, (name, n)
    assert all(p.device.type == "meta" for p in models[name].parameters())


def test_the_architectures_are_stable_diffusion_15_and_depth_anything_v2_large(models):
    unet, inp = models["unet"].config, models["inpaint_unet"].config
    assert (unet.in_channels, inp.in_channels, unet.out_channels, inp.out_channels) == (4, 9, 4, 4)
    assert list(unet.block_out_channels) == [320, 640, 1280, 1280] and unet.cross_attention_dim == 768
    assert unet.sample_size == 64                                 # 512² pixels: 64² latents
    assert 859.0e6 < fsm.parameter_count(models["unet"]) < 860.0e6
    vae = models["vae"].config
    assert vae.latent_channels == 4 and 2 ** (len(vae.block_out_channels) - 1) == 8
    te = models["text_encoder"].config
    assert (te.hidden_size, te.num_hidden_layers, te.vocab_size) == (768, 12, 49408)
    depth = models["depth"].config
    assert depth.backbone_config.hidden_size == 1024 and depth.backbone_config.num_hidden_layers == 24
    assert depth.depth_estimation_type == "metric" and depth.max_depth == 80
    assert fsm.depth_processor().size == {"height": 518, "width": 518}
    assert fsm.build_scheduler().config.beta_schedule == "scaled_linear"
