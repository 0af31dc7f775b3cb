"""The one evaluation path: base and guided sets from the same seeds, in memory or as imagefolders, each
scored (by a classifier's bias report or the caller's own score), the adapter detached afterwards."""

import numpy as np
import pytest
import torch

from invgen.data.imagefolder import read_imagefolder
from invgen.errors import InvgenConfigError
from invgen.side_by_side import side_by_side

P3, P7 = "a photo of the digit 3", "a photo of the digit 7"


@pytest.fixture(scope="module")
def pair():
    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.pipelines import build_pixel_pipeline

    pipe = build_pixel_pipeline(seed=0)
    guidance = InvariantGuidance.for_denoiser(pipe.unet, AdapterConfig(kind="residual"), base_model="tiny")
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh adapter adds exactly 0: make it act
        for p in guidance.module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return pipe, guidance


def test_folders_hold_the_same_images_as_memory_and_are_scored_from_disk(pair, tmp_path):
    pipe, guidance = pair
    common = dict(seed=3, guidance=guidance, classifier="oracle:color", attribute="color", n_boot=0,
                  num_inference_steps=2)
    memory = side_by_side(pipe, [P3, P7], 2, **common)
    folders = {"base": tmp_path / "b", "debiased": tmp_path / "d"}
    disk = side_by_side(pipe, [P3, P7], 2, folders=folders, info={"debiased": {"scale": 1.0}}, **common)

    assert disk.images == {} and disk.folders == folders and set(disk.seconds) == {"base", "debiased"}
    for label, folder in folders.items():
        on_disk = read_imagefolder(folder)
        np.testing.assert_array_equal(on_disk.images, memory.images[label])
        assert on_disk.prompts == [P3, P3, P7, P7] == memory.prompts
        for key in ("bias_score", "per_prompt", "n_images"):
            assert disk.reports[label][key] == memory.reports[label][key]
    # The adapter acted, and is gone afterwards: the base set of a rerun is what it was.
    assert np.abs(memory.images["base"].astype(int) - memory.images["debiased"]).mean() > 1
    assert disk.comparison["labels"] == ["base", "debiased"]
    again = side_by_side(pipe, [P3, P7], 2, seed=3, num_inference_steps=2)
    np.testing.assert_array_equal(again.images["base"], memory.images["base"])
    assert again.reports == {} and again.comparison is None


def test_a_score_of_the_callers_own_replaces_the_bias_report(pair):
    pipe, guidance = pair
    seen = []

    def score(label, images, prompts):
        seen.append((label, images.shape, tuple(prompts)))
        return {"mean": float(images.mean())}

    result = side_by_side(pipe, [P7], 3, guidance=guidance, labels=("base", "invdiff"), score=score,
                          num_inference_steps=2)
    assert [s[0] for s in seen] == ["base", "invdiff"] and seen[0][1][0] == 3 and seen[0][2] == (P7,) * 3
    assert result.reports["invdiff"]["mean"] == pytest.approx(float(result.images["invdiff"].mean()))
    assert result.comparison is None


def test_a_classifier_without_its_attribute_is_refused_before_sampling(pair):
    with pytest.raises(InvgenConfigError, match="name the attribute the classifier reads"):
        side_by_side(pair[0], [P3], 1, classifier="oracle:color")


def test_a_classifier_object_is_named_by_its_label_in_folder_reports(pair, tmp_path):
    from invgen.metrics.classifiers import load_classifier

    pipe, _ = pair
    result = side_by_side(pipe, [P3], 1, classifier=load_classifier("oracle:color:two"), attribute="color",
                          classifier_label="oracle:color:two", n_boot=0, folders={"base": tmp_path / "b"},
                          num_inference_steps=2)
    assert result.reports["base"].classifier == "oracle:color:two"
