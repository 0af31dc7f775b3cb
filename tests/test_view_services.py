"""The services every view maker shares: image-to-image over any pipeline kind, and the on-disk view cache."""

import numpy as np
import pytest
import torch

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.views.cache import ViewCache
from invgen.views.img2img import Img2Img, pipeline_kind


def test_the_cache_computes_only_the_misses_in_batches_and_serves_them_again(tmp_path):
    pixels = [np.full((4, 4, 3), v, np.uint8) for v in (0, 50, 100, 150, 200)]
    batches = []

    def make(idx):
        batches.append(list(idx))
        return np.stack([255 - pixels[i] for i in idx])

    cache = ViewCache(tmp_path / "c", "maker-v1")
    first = cache.views(pixels, [(s,) for s in range(5)], make, batch_size=2)
    assert batches == [[0, 1], [2, 3], [4]] and (cache.hits, cache.misses) == (0, 5)
    again = cache.views(pixels, [(s,) for s in range(5)], make, batch_size=2)
    assert torch.equal(first, again) and (cache.hits, cache.misses) == (5, 5) and len(batches) == 3
    # Another key (a new seed) or another maker is a miss; an unreadable entry is computed again.
    cache.views(pixels[:1], [(9,)], make)
    assert batches[-1] == [0]
    next(iter((tmp_path / "c").rglob("*.png"))).write_bytes(b"not a png")
    cache.views(pixels, [(s,) for s in range(5)], make)
    assert len(batches[-1]) == 1
    # Without a folder nothing is stored and every view is made.
    assert torch.equal(ViewCache(None, "maker-v1").views(pixels, [(s,) for s in range(5)], make), first)


def test_img2img_takes_uint8_or_signed_images_and_returns_uint8(tiny_pipe):
    i2i = Img2Img(tiny_pipe)
    assert i2i.kind == "embedded" and i2i.noise_range == 1.0
    u8 = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    from invgen.pixels import to_signed

    a = i2i(u8, ["a", "b"], [1, 2], 0.5, num_inference_steps=2)
    b = i2i(to_signed(u8), ["a", "b"], [1, 2], [0.5, 0.5], num_inference_steps=2)
    assert a.dtype == np.uint8 and a.shape == u8.shape and np.array_equal(a, b)
    with pytest.raises(InvgenDataError, match="2 images, 1 prompts"):
        i2i(u8, ["a"], [1, 2], 0.5)


def test_a_text_to_image_pipeline_gets_its_image_to_image_sibling():
    from diffusers import StableDiffusionPipeline

    from invgen.models import tiny_stable_diffusion_components

    pipe = StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0))
    assert pipeline_kind(pipe) is None
    i2i = Img2Img(pipe)
    assert i2i.kind == "img2img" and i2i.pipe.unet is pipe.unet

    class NoImages:
        def __call__(self, prompt):
            return None

    with pytest.raises(InvgenModelError, match="NoImages has no image-to-image form"):
        Img2Img(NoImages())


def test_encoders_resolve_by_name():
    from invgen.errors import InvgenConfigError
    from invgen.models.encoders import ENCODERS, build_encoder

    assert {"small_resnet", "timm", "torchvision"} <= set(ENCODERS.names())
    assert build_encoder("small_resnet", widths=(8, 16)).feature_dim == 16
    with pytest.raises(InvgenConfigError, match=r"unknown encoder 'resnet' \(use small_resnet, timm:NAME"):
        build_encoder("resnet")
