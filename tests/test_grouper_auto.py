"""The default grouper (mixture on per-prompt standardised log-losses, BIC) and `groups.timesteps: auto`, on
synthetic losses with known groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from invgen.config import load_config
from invgen.errors import InvgenConfigError
from invgen.invdiff.config import InvDiffConfig
from invgen.invdiff.grouper import fit_group_weights, separation_report
from invgen.invdiff.levels import level_grid, level_score, log_snr, select_level
from invgen.invdiff.mixture import mixture_groups, standardize
from invgen.train.diffusion import DenoisingObjective


def _digits_like(seed: int = 0, n: int = 1437, minority: float = 0.05, shift: float = 1.0, prompts: int = 10):
    """Losses like a biased model's at a good level: prompts of unequal difficulty, a long-tailed majority
    within each, and a minority (bias-conflicting) that is hard relative to its own prompt."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, prompts, n)
    difficulty = np.exp(rng.normal(0.0, 0.6, prompts))
    truth = (rng.random(n) < minority).astype(int)
    log_loss = np.log(difficulty[prompt]) + rng.normal(0.0, 0.25, n) + shift * truth
    return np.exp(log_loss), truth, prompt


def _agreement(w: np.ndarray, truth: np.ndarray) -> float:
    return float(((w.argmax(1) == w.shape[1] - 1).astype(int) == truth).mean())


def test_mixture_finds_a_five_percent_minority_the_spread_grouper_overshoots():
    losses, truth, prompt = _digits_like(seed=1)
    w, info = mixture_groups(losses, prompt)
    assert w.shape == (len(losses), 2) and np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    assert info["num_groups_found"] == 2 and "warning" not in info
    report = separation_report(losses, w, truth)
    assert report["group_agreement"] > 0.97
    assert report["group_auc"] > 0.97
    assert 0.6 * truth.sum() < report["group_sizes"][1] < 1.4 * truth.sum()
    # The earlier default on the same losses: the prompts' unequal difficulty makes a long tail, and the
    # share-weighted spread puts its break far inside the majority.
    old = separation_report(losses, fit_group_weights(losses), truth)
    assert old["group_sizes"][1] > 3 * truth.sum()
    assert old["group_agreement"] < report["group_agreement"] - 0.1


def test_standardizing_within_prompts_is_what_removes_the_prompts_difficulty():
    losses, truth, prompt = _digits_like(seed=1)
    z = standardize(losses, prompt)
    for p in np.unique(prompt):
        assert abs(np.median(z[prompt == p])) < 1e-9
    w_global, _ = mixture_groups(losses, None)
    w_prompt, _ = mixture_groups(losses, prompt)
    assert _agreement(w_prompt, truth) > _agreement(w_global, truth) + 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_one_percent_minority_is_not_mixed_with_the_majoritys_heavy_tail(seed):
    """16 bias-conflicting samples of 1,437 beyond a majority whose right tail is heavier than a Gaussian's
    (as on the 1,200-step digits base at p_align 0.99). A minority component free to widen took ~4× the
    minority, a fifth of its weight on it; capped at the majority's width it stays on the minority."""
    rng = np.random.default_rng(seed)
    n, k = 1437, 16
    truth = (np.arange(n) < k).astype(int)
    majority = np.where(rng.random(n) < 0.5, -np.abs(rng.normal(0.0, 0.86, n)), np.abs(0.9 * rng.standard_t(5, n)))
    z = np.where(truth == 1, rng.normal(5.0, 1.4, n), majority)
    w, info = mixture_groups(np.exp(z), None)
    assert info["num_groups_found"] == 2
    hard = w[:, -1]
    assert hard.sum() < 2.5 * k and hard[truth == 1].sum() / hard.sum() > 0.35
    assert hard[truth == 1].sum() > 0.75 * k  # and it still holds most of the minority


@pytest.mark.parametrize("kind", ["lognormal", "lognormal-wide", "gamma", "student-t-in-log"])
def test_one_long_tailed_group_is_not_split(kind):
    rng = np.random.default_rng(1)
    n = 2000
    losses = {
        "lognormal": np.exp(rng.normal(0.0, 0.5, n)),
        "lognormal-wide": np.exp(rng.normal(0.0, 1.5, n)),
        "gamma": rng.gamma(3.0, 1.0, n),
        "student-t-in-log": np.exp(0.3 * rng.standard_t(4, n)),
    }[kind]
    w, info = mixture_groups(losses, rng.integers(0, 4, n))
    assert info["num_groups_found"] == 1
    assert "no minority group" in info["warning"]
    # Uninformative weights: every sample in every group alike, so the min step is plain fine-tuning.
    assert np.allclose(w, 0.5)


def test_a_minority_whose_mirror_gains_a_tenth_is_still_found_on_real_losses():
    """Per-sample losses (t = 833, 16 draws) of the robustness matrix's 1,200-step base at p_align 0.90, data
    seed 1: 153 of 1,437 are bias-conflicting, loss ROC-AUC 0.91. The mirrored scores gain 0.10 of what the
    real minority gains (Student-t majorities: 0.37 and up); refused at a bound of 0.1, the min step became
    plain fine-tuning and raised the bias from 0.47 to 0.65."""
    data = np.load(Path(__file__).parent / "data" / "losses_1200steps_p090_seed1.npz")
    w, info = mixture_groups(data["losses"].astype(np.float64), data["prompt"])
    assert info["num_groups_found"] == 2 and 0.09 < info["mirror_gain_ratio"] < 0.2
    hard, truth = w[:, -1], data["bias_conflicting"] == 1
    assert 40 < hard.sum() < 60 and hard[truth].sum() / hard.sum() > 0.7


def test_more_groups_than_the_data_has_are_not_invented():
    losses, truth, prompt = _digits_like(shift=1.5)
    w, info = mixture_groups(losses, prompt, max_groups=4)
    assert info["num_groups_found"] == 2 and w.shape[1] == 2
    assert _agreement(w, truth) > 0.97


def _objective(kind: str) -> DenoisingObjective:
    if kind == "flow":
        return DenoisingObjective("sd3", FlowMatchEulerDiscreteScheduler(shift=3.0))
    schedule = {"cosine": "squaredcos_cap_v2", "linear": "linear"}[kind]
    return DenoisingObjective("sd", DDPMScheduler(beta_schedule=schedule))


@pytest.mark.parametrize("kind", ["cosine", "linear", "flow"])
def test_level_grid_spans_the_same_signal_to_noise_ratios_on_every_schedule(kind):
    obj = _objective(kind)
    grid = level_grid(obj, 8)
    assert len(grid) == 8 and grid == sorted(grid) and all(0 < t < 1000 for t in grid)
    snr = log_snr(obj, grid)
    assert np.all(np.diff(snr) < 0)  # low noise first
    steps = np.diff(snr)
    assert np.allclose(steps, steps.mean(), atol=0.15 * abs(steps.mean()))  # even in log-SNR
    assert grid[0] <= 110 and grid[-1] >= 940


@pytest.mark.parametrize("kind", ["cosine", "flow"])
def test_selector_finds_the_level_where_the_losses_separate(kind):
    """A fake model whose minority stands out only around log-SNR −3 (t ≈ 880 cosine, σ ≈ 0.82 flow); each
    noise draw adds its own noise, so averaging d draws shrinks it by √d."""
    obj = _objective(kind)
    rng = np.random.default_rng(0)
    n = 1500
    truth = (rng.random(n) < 0.05).astype(int)
    prompt = rng.integers(0, 10, n)
    difficulty = rng.normal(0.0, 0.5, 10)
    target = -3.0
    calls = []

    def losses_at(t: int, draws: int) -> np.ndarray:
        calls.append((t, draws))
        snr = float(log_snr(obj, [t])[0])
        shift = 1.6 * np.exp(-((snr - target) ** 2) / 2.0)
        noise = rng.normal(0.0, 0.5 / np.sqrt(draws), n)
        return np.exp(difficulty[prompt] + rng.normal(0.0, 0.1, n) + noise + shift * truth)

    chosen, scan = select_level(lambda t, d: level_score(losses_at(t, d), prompt)[0], obj, 8, 1, 16)
    assert len(chosen) == 1 and abs(float(log_snr(obj, chosen)[0]) - target) < 0.8
    assert scan["levels"] == sorted(scan["levels"]) and len(scan["score"]) == len(scan["levels"]) >= 9
    # Successive halving: each round keeps the better half of the last one, with twice the draws (up to 16).
    rounds = scan["rounds"]
    assert [r["draws"] for r in rounds] == [1, 2, 4, 8, 16] and rounds[-1]["levels"] == chosen
    for prev, cur in zip(rounds, rounds[1:], strict=False):
        ranked = sorted(prev["levels"], key=lambda t, p=prev: p["score"][p["levels"].index(t)], reverse=True)
        assert sorted(cur["levels"]) == sorted(ranked[: -(-len(ranked) // 2)])
    assert len(calls) == sum(len(r["levels"]) for r in rounds)
    # Where nothing stands out, the score is near 0.
    assert scan["score"][0] < 0.01 < max(scan["score"])


def test_selector_stops_adding_draws_at_the_configured_number():
    obj = _objective("cosine")
    seen = []
    chosen, scan = select_level(lambda t, d: seen.append(d) or -abs(t - 600), obj, 8, 1, 2)
    assert max(seen) == 2 and [r["draws"] for r in scan["rounds"]][-1] == 2 and len(scan["rounds"][-1]["levels"]) == 1
    assert abs(chosen[0] - 600) <= min(abs(t - 600) for t in scan["levels"])


def test_groups_config_errors():
    base = "configs/digits/invdiff.yaml"
    cfg = load_config(InvDiffConfig, base)
    assert cfg.groups.timesteps == "auto" and cfg.groups.method == "mixture"
    assert load_config(InvDiffConfig, base, ["groups.timesteps=[700, 900]"]).groups.timesteps == [700, 900]
    for override, message in [
        ("groups.timesteps=sometimes", r"groups.timesteps: must be auto or a list of levels in \[0, 1000\)"),
        ("groups.timesteps=900", r"groups.timesteps: must be auto or a list of levels"),
        ("groups.timesteps=[1000]", r"groups.timesteps: levels must be in \[0, 1000\)"),
        ("groups.timesteps=[]", r"groups.timesteps: must be auto or list at least one level"),
        ("groups.scan_levels=2", r"groups.scan_levels: must be from 3 to 50, got 2"),
        ("groups.scan_draws=0", r"groups.scan_draws: must be positive"),
        ("groups.method=otsu", r"groups.method: expected one of \['mixture', 'spread'\]"),
        ("groups.standardize=class", r"groups.standardize: expected one of \['prompt', 'global'\]"),
    ]:
        with pytest.raises(InvgenConfigError, match=message):
            load_config(InvDiffConfig, base, [override])


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_infer_groups_auto_records_the_scan_and_reuses_its_draw(family, tmp_path):
    """End to end on a tiny pipeline (DDPM and flow matching): the chosen level is the last round's, groups.json
    carries the criterion's curve and rounds, and the final losses are exactly the configured draws at that
    level (the draws the rounds made are reused)."""
    import json

    from accelerate import Accelerator
    from helpers import P3, P5, write_set
    from safetensors import safe_open

    from invgen.invdiff.grouper import per_sample_losses
    from invgen.invdiff.train import infer_groups
    from invgen.models.denoisers import denoiser_of
    from invgen.models.loading import load_pipeline, save_pipeline
    from invgen.models.tiny import tiny_pipeline
    from invgen.train.data import encode_for_pipeline, prepare_dataset

    pipe_dir = save_pipeline(tiny_pipeline(family), tmp_path / "pipe")
    write_set(tmp_path / "set" / "train", {P3: ["red"] * 7 + ["green"], P5: ["green"] * 7 + ["red"]}, size=16)
    recipe = "configs/sd15/invdiff_digits.yaml" if family == "sd" else "configs/sd3/invdiff_digits.yaml"
    cfg = load_config(InvDiffConfig, recipe, [
        f"base_model={pipe_dir}", f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'set'}",
        "data.builder=null", "data.size=16", "data.latent_cache=null", "groups.noise_draws=2",
        "groups.scan_levels=4", "groups.batch_size=8", "train.mixed_precision='no'",
    ])
    assert cfg.groups.timesteps == "auto"
    out = infer_groups(cfg)
    report = json.loads((out / "groups.json").read_text())
    scan = report["level_scan"]
    assert report["timesteps_requested"] == "auto" and report["timesteps"] == scan["chosen"]
    levels = report["timesteps"]
    assert len(levels) == 1 and scan["rounds"][-1]["levels"] == levels and scan["rounds"][-1]["draws"] == 2
    assert all(t in scan["levels"] for t in levels)
    assert len(scan["levels"]) >= 4 and scan["log_snr"] == sorted(scan["log_snr"], reverse=True)
    assert report["grouper"]["method"] == "mixture"

    pipe = load_pipeline(pipe_dir)
    objective = DenoisingObjective.for_pipeline(pipe)
    data = encode_for_pipeline(pipe, prepare_dataset(cfg.data, True), cfg.data, Accelerator(), out)  # its cache
    expected = per_sample_losses(denoiser_of(pipe).eval(), objective, data.x0, data.embeddings, levels, 2,
                                 progress=False, prompt_index=data.prompt_index)
    with safe_open(str(out / "groups.safetensors"), "pt") as f:
        saved = f.get_tensor("losses").numpy()
    np.testing.assert_allclose(saved, expected, rtol=1e-6)
