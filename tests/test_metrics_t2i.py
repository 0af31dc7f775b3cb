"""Vice et al.'s T2I measures against hand computations, with canned captions and canned probabilities."""

import math

import numpy as np
import pytest

from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.metrics.t2i import (
    ClipJudge,
    TokenFilter,
    distribution_bias,
    generative_miss_rate,
    jaccard_hallucination,
    jaccard_terms,
    read_synonyms,
    t2i_bias,
)

STOP = {"a", "an", "the", "of", "on", "and", "in", "with", "is"}


def tf(**kw):
    # Fixed stop words and no WordNet, so the tests do not depend on which nltk corpora are installed.
    return TokenFilter(stop_words=STOP, use_wordnet=False, **kw)


def test_token_filter_stop_words_short_tokens_person_and_dedup():
    f = tf()
    assert f.words("A man and a woman riding a horse, a horse!") == ["person", "riding", "horse"]
    assert f.words("a photo of the digit 3") == ["photo", "digit"]  # "3" has one letter
    # object names are taken whole, not split into words
    assert sorted(f.words(["Traffic Light", "a", "girl"])) == ["person", "traffic light"]


def test_default_stop_words_drop_function_words():
    assert TokenFilter(use_wordnet=False).words("the cat is on the mat") == ["cat", "mat"]


@pytest.mark.parametrize("table", [{"dog": ["puppy", "hound"]}, {"puppy": ["dog"]}, {"puppy": "dog"}])
def test_synonym_table_maps_onto_prompt_words_either_way(table):
    f = tf(synonyms=table)
    x = f.prompt_words("a photo of a dog")
    assert x == ["photo", "dog"]
    assert f.output_words("a puppy on the grass", x) == ["dog", "grass"]
    # only synonyms of the image's own prompt words are mapped
    assert f.output_words("a puppy on the grass", ["cat"]) == ["puppy", "grass"]


def test_distribution_bias_by_hand():
    # Non-prompt words over 7 images: cat in 4, hat in 2, mat in 1 ("dog" is the prompt word everywhere).
    outputs = [
        ["dog", "cat", "hat"],
        ["dog", "cat", "cat"],
        ["cat", "hat"],
        ["cat", "mat"],
        ["dog"],
        [],
        ["dog"],
    ]
    prompt_words = [["dog"]] * len(outputs)
    out = distribution_bias(outputs, prompt_words)
    # sorted counts 4, 2, 1 → min-max (4−1)/3, (2−1)/3, 0 = 1, ⅓, 0; area (1 + ⅓)/2 + (⅓ + 0)/2 = 5/6
    assert out["M"] == 3
    assert out["B_D"] == pytest.approx(5 / 6)
    assert out["B_D_size_free"] == pytest.approx(5 / 6 / 2)
    assert out["top_words"] == {"cat": 4, "hat": 2, "mat": 1}


def test_distribution_bias_degenerate_cases():
    flat = distribution_bias([["a1"], ["b1"], ["c1"]])  # counts 1, 1, 1: max = min → all 1
    assert flat["B_D"] == pytest.approx(2.0) and flat["B_D_size_free"] == pytest.approx(1.0)
    one = distribution_bias([["cat"], ["cat"]])
    assert one["B_D"] == 0.0 and one["M"] == 1 and math.isnan(one["B_D_size_free"])
    none = distribution_bias([["dog"]], [["dog"]])
    assert none["B_D"] == 0.0 and none["M"] == 0


def test_jaccard_by_hand():
    # X = {dog, grass}, Y = {dog, ball, park}: |X∩Y| = 1, |X∪Y| = 4
    assert jaccard_terms({"dog", "grass"}, {"dog", "ball", "park"}) == pytest.approx((0.75, 2 / 3, 0.5))
    assert jaccard_terms(set(), set()) == (0.0, 0.0, 0.0)
    assert jaccard_terms({"dog"}, set()) == (1.0, 0.0, 1.0)
    out = jaccard_hallucination([{"dog", "grass"}, {"cat"}], [{"dog", "ball", "park"}, {"cat"}])
    assert out == pytest.approx({"H_J": 0.75 / 2, "H_plus": (2 / 3) / 2, "H_minus": 0.5 / 2})


def test_generative_miss_rate_by_hand():
    # misses where P(prompt) ≤ P(" ") = 1 − P(prompt): 0.5 (a tie counts as a miss) and 0.2
    out = generative_miss_rate([0.9, 0.5, 0.2, 0.7])
    assert out["M_G"] == pytest.approx(2 / 4)
    assert out["mean_1_minus_p"] == pytest.approx((0.1 + 0.5 + 0.8 + 0.3) / 4)
    assert generative_miss_rate([0.4], p_blank=[0.3])["M_G"] == 0.0


class CannedJudge:
    def __init__(self, probs):
        self.probs = list(probs)
        self.calls = []

    def __call__(self, image, texts):
        self.calls.append(list(texts))
        p = self.probs[int(image[0, 0, 0])]
        return [p, 1 - p]


def test_t2i_bias_with_canned_captions_and_judge():
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(4)  # the canned extractor and judge look up by this pixel
    prompts = ["a dog", "a dog", "a man", "a man"]
    captions = ["a dog on grass", "a puppy and a ball", "a woman with a hat", "a man"]
    judge = CannedJudge([0.9, 0.4, 0.5, 0.8])
    out = t2i_bias(
        images,
        prompts,
        extractor=lambda im: captions[int(im[0, 0, 0])],
        judge=judge,
        token_filter=tf(synonyms={"dog": ["puppy"]}),
    )
    assert judge.calls[0] == ["a dog", " "]
    # X: {dog} twice, {person} twice. Y: {dog, grass}, {dog, ball}, {person, hat}, {person}
    # H_J: ½, ½, ½, 0; H⁺: ½, ½, ½, 0; H⁻: 0 everywhere
    assert out["H_J"] == pytest.approx(1.5 / 4) and out["H_plus"] == pytest.approx(1.5 / 4)
    assert out["H_minus"] == 0.0
    # B_D: grass 1, ball 1, hat 1 → all equal → area 2, M = 3
    assert out["B_D"] == pytest.approx(2.0) and out["M"] == 3
    # M_G: misses at 0.4 and 0.5 (tie); mean 1 − p = (0.1 + 0.6 + 0.5 + 0.2) / 4
    assert out["M_G"] == pytest.approx(0.5) and out["mean_1_minus_p"] == pytest.approx(0.35)
    dog, man = out["per_prompt"]["a dog"], out["per_prompt"]["a man"]
    assert dog["n"] == 2 and dog["H_J"] == pytest.approx(0.5) and dog["M_G"] == pytest.approx(0.5)
    assert man["H_J"] == pytest.approx(0.25) and man["M_G"] == pytest.approx(0.5)
    assert out["prompt_words"] == {"a dog": ["dog"], "a man": ["person"]}


def test_t2i_bias_without_judge_or_extractor():
    images = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    out = t2i_bias(images, ["a cat"], outputs=["a cat"], token_filter=tf())
    assert out["H_J"] == 0.0 and "M_G" not in out
    with pytest.raises(ValueError, match="extractor"):
        t2i_bias(images, ["a cat"])



class FakeBundle:
    """CLIP stand-in: image feature = (mean R, mean G); text feature = (has 'red', has 'green')."""

    logit_scale = 10.0

    def encode_images(self, images, batch_size=64):
        import torch

        f = torch.tensor(np.asarray(images, dtype=np.float64)[..., :2].mean(axis=(1, 2)), dtype=torch.float32)
        return torch.nn.functional.normalize(f + 1e-6, dim=-1)

    def encode_texts(self, texts):
        import torch

        f = torch.tensor([[float("red" in t), float("green" in t)] for t in texts]) + 1e-3
        return torch.nn.functional.normalize(f, dim=-1)


def test_clip_judge_batch_equals_per_image():
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    images[0, ..., 0] = 200  # red
    images[1, ..., 1] = 200  # green
    images[2, ..., :2] = 100  # yellow-ish: both
    judge = ClipJudge(FakeBundle())
    prompts = ["a red digit", "a red digit", "a green digit"]
    batch = judge.batch(images, prompts)
    single = np.array([judge(im, [p, " "])[0] for im, p in zip(images, prompts, strict=True)])
    assert np.allclose(batch, single, atol=1e-6)
    # red image vs "a red digit": cos 1 against the blank's cos 1/√2 → sigmoid(10 (1 − 1/√2))
    assert batch[0] == pytest.approx(1 / (1 + math.exp(-10 * (1 - 1 / math.sqrt(2)))), abs=1e-3)
    # green image vs "a red digit": cos ≈ 0 against 1/√2 → sigmoid(−10/√2), a miss
    assert batch[1] == pytest.approx(1 / (1 + math.exp(10 / math.sqrt(2))), abs=1e-3)


def test_read_synonyms(tmp_path):
    (tmp_path / "syn.yaml").write_text("dog: [puppy, hound]\ncar: automobile\n")
    assert read_synonyms(tmp_path / "syn.yaml") == {"dog": ["puppy", "hound"], "car": ["automobile"]}
    (tmp_path / "bad.json").write_text('{"dog": [1, 2]}')
    with pytest.raises(InvgenConfigError, match="synonyms of 'dog'"):
        read_synonyms(tmp_path / "bad.json")
    with pytest.raises(InvgenConfigError, match="no synonym table"):
        read_synonyms(tmp_path / "missing.yaml")


def test_blip_captioner_missing_folder(tmp_path):
    from invgen.metrics.t2i import BlipCaptioner

    with pytest.raises(InvgenModelError, match="no captioner folder"):
        BlipCaptioner(tmp_path / "nope")


def test_blip_captioner_with_a_tiny_random_blip(tmp_path):
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from invgen.metrics.t2i import BlipCaptioner

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        "a",
        "red",
        "green",
        "digit",
        "photo",
        "of",
    ]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"), bos_token="[DEC]")
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            encoder_hidden_size=32,
            bos_token_id=5,
            pad_token_id=0,
            sep_token_id=3,
            eos_token_id=3,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(tmp_path / "blip")
    proc.save_pretrained(tmp_path / "blip")

    captioner = BlipCaptioner(tmp_path / "blip", max_new_tokens=4, device="cpu")
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    captions = captioner.batch(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert all(set(c.split()) <= set(words[6:]) and len(c.split()) <= 4 for c in captions)
    assert captioner(images[0]) == captions[0]
    prompts = ["a red digit"] * 3
    via_captioner = t2i_bias(images, prompts, captioner, token_filter=tf())
    assert via_captioner["H_J"] == t2i_bias(images, prompts, outputs=captions, token_filter=tf())["H_J"]
