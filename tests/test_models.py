import json

import numpy as np
import pytest
import torch

from invgen.errors import InvgenModelError
from invgen.models import load_pipeline, tiny_stable_diffusion_components
from invgen.models.loading import save_pipeline
from invgen.pipelines import PixelTextToImagePipeline


def test_stock_stable_diffusion_pipeline_from_tiny_parts(tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a photo of a cat", "a photo of a dog"], num_inference_steps=2, height=16, width=16,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 16, 16, 3) and np.isfinite(out).all()
    # Different prompts give different images: the tiny text encoder still tells prompts apart.
    assert np.abs(out[0] - out[1]).max() > 1e-4
    save_pipeline(pipe, tmp_path / "sd")
    again = load_pipeline(tmp_path / "sd")
    again.set_progress_bar_config(disable=True)
    out2 = again(["a photo of a cat", "a photo of a dog"], num_inference_steps=2, height=16, width=16,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_allclose(out, out2, atol=1e-5)


def test_pixel_pipeline_round_trip_and_determinism(tiny_pipe, tmp_path):
    kwargs = dict(num_inference_steps=3, output_type="np")
    a = tiny_pipe(["a photo of the digit 1"] * 2, generator=torch.Generator().manual_seed(1), **kwargs).images
    b = tiny_pipe(["a photo of the digit 1"] * 2, generator=torch.Generator().manual_seed(1), **kwargs).images
    assert a.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    save_pipeline(tiny_pipe, tmp_path / "p")
    loaded = load_pipeline(tmp_path / "p")
    assert isinstance(loaded, PixelTextToImagePipeline)
    loaded.set_progress_bar_config(disable=True)
    c = loaded(["a photo of the digit 1"] * 2, generator=torch.Generator().manual_seed(1), **kwargs).images
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_pixel_pipeline_callback_and_img2img(tiny_pipe):
    seen = []

    def cb(pipe, i, t, tensors):
        seen.append(int(t))
        return tensors

    img = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    out = tiny_pipe(["a", "b"], image=img, strength=[0.0, 1.0], num_inference_steps=4,
                    generator=torch.Generator().manual_seed(0), output_type="np",
                    callback_on_step_end=cb).images
    assert len(seen) == 4
    # Strength 0 returns the input image untouched; strength 1 is a fresh generation.
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)
    assert np.abs(out[1]).max() > 0.01


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(InvgenModelError, match="no pipeline folder at"):
        load_pipeline(tmp_path / "missing" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvgenModelError, match="no model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(InvgenModelError) as err:
        load_pipeline("nobody-has/this-model-xyz")
    msg = str(err.value)
    assert "could not load 'nobody-has/this-model-xyz'" in msg and "\n" not in msg


def test_save_pipeline_marks_completeness_last(tiny_pipe, tmp_path):
    out = save_pipeline(tiny_pipe, tmp_path / "p")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "PixelTextToImagePipeline"
    assert not [p for p in out.iterdir() if p.name.startswith(".pipeline.")]
