"""General bias of text-to-image outputs, after Vice et al., "Quantifying Bias in Text-to-Image Generative
Models" (2023): distribution bias B_D, Jaccard hallucination H_J and generative miss-rate M_G.

Each image is read into a set of words by a pluggable *extractor* (a callable image → caption string or
set of object names: a captioner such as BLIP, an object detector, or a classifier's own `object_extractor()`,
as the colored digits' oracle has),
and the prompt into its set of subject words by the same token filter. M_G needs a *judge*, a callable
(image, texts) → probabilities, e.g. CLIP zero-shot between the prompt and a blank text. Formulas are in
docs/metrics.md, which also says which choices are the paper's and which ours.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenModelError

PERSON = "person"
# The paper maps these five onto "person"; the plurals and "people" are our addition.
PERSON_WORDS = frozenset(
    {"man", "woman", "child", "girl", "boy", "men", "women", "children", "girls", "boys", "people", "persons"}
)
_WORD = re.compile(r"[a-z0-9]+")

Extractor = Callable[[np.ndarray], "str | Iterable[str]"]
Judge = Callable[[np.ndarray, Sequence[str]], Sequence[float]]


def default_stop_words() -> frozenset[str]:
    """nltk's English stop words when its corpus is installed, else scikit-learn's English list."""
    try:
        from nltk.corpus import stopwords

        return frozenset(stopwords.words("english"))
    except (ImportError, LookupError, OSError):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return frozenset(ENGLISH_STOP_WORDS)


def _wordnet():
    """nltk's WordNet reader if both nltk and its corpus are present, else None (the corpus is a download)."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except (ImportError, LookupError, OSError, AttributeError):
        return None


@dataclass
class TokenFilter:
    """Words of a caption or a prompt: lower case, stop words and one-letter tokens dropped, person words
    mapped to "person", synonyms of the prompt's words mapped onto them, duplicates removed (order kept).

    `synonyms` is a table `{word: [synonym, ...]}` read both ways (either side may be the prompt word);
    WordNet synonyms are added when nltk and its corpus are installed and `use_wordnet` is set.
    """

    stop_words: frozenset[str] | None = None
    min_length: int = 2
    person_words: frozenset[str] = PERSON_WORDS
    synonyms: Mapping[str, Iterable[str]] | None = None
    use_wordnet: bool = True
    _cache: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.stop_words is None:
            self.stop_words = default_stop_words()
        self.stop_words = frozenset(w.lower() for w in self.stop_words)
        self._table: dict[str, set[str]] = {}
        for word, syns in (self.synonyms or {}).items():
            syns = [syns] if isinstance(syns, str) else list(syns)
            for s in syns:
                self._table.setdefault(word.lower(), set()).add(s.lower())
                self._table.setdefault(s.lower(), set()).add(word.lower())
        self._wn = _wordnet() if self.use_wordnet else None

    def words(self, output: str | Iterable[str]) -> list[str]:
        """Filtered words; a string is split into words, a set of names is taken name by name."""
        raw = (
            _WORD.findall(output.lower())
            if isinstance(output, str)
            else [str(t).strip().lower() for t in output]
        )
        out: dict[str, None] = {}
        for t in raw:
            if len(t) < self.min_length or t in self.stop_words:
                continue
            out[PERSON if t in self.person_words else t] = None
        return list(out)

    def synonyms_of(self, word: str) -> frozenset[str]:
        if word not in self._cache:
            syns = set(self._table.get(word, ()))
            if self._wn is not None:
                for synset in self._wn.synsets(word):
                    syns.update(n.lower() for n in synset.lemma_names() if "_" not in n)
            syns.discard(word)
            self._cache[word] = frozenset(syns)
        return self._cache[word]

    def map_onto(self, words: Iterable[str], prompt_words: Iterable[str]) -> list[str]:
        """Replace a word by the prompt word it is a synonym of (so "number" counts as "digit")."""
        onto: dict[str, str] = {}
        for p in prompt_words:
            for s in self.synonyms_of(p):
                onto.setdefault(s, p)
        return list(dict.fromkeys(w if w in prompt_words else onto.get(w, w) for w in words))

    def prompt_words(self, prompt: str) -> list[str]:
        return self.words(prompt)

    def output_words(self, output: str | Iterable[str], prompt_words: Iterable[str]) -> list[str]:
        return self.map_onto(self.words(output), list(prompt_words))


def read_synonyms(path: str | os.PathLike) -> dict[str, list[str]]:
    """A synonym table `{word: [synonym, ...]}` from YAML or JSON (used when WordNet is not installed)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise InvgenConfigError(f"no synonym table at {path}")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - JSON and YAML errors share nothing but a message
        raise InvgenConfigError(
            f"{path}: not valid JSON or YAML ({str(e).strip().splitlines()[0]})"
        ) from None
    if not isinstance(data, Mapping):
        raise InvgenConfigError(f"{path}: expected a mapping from a word to its synonyms")
    table = {}
    for word, syns in data.items():
        syns = [syns] if isinstance(syns, str) else syns
        if not isinstance(syns, list) or not all(isinstance(s, str) for s in syns):
            raise InvgenConfigError(f"{path}: the synonyms of '{word}' must be a word or a list of words")
        table[str(word)] = syns
    return table


def distribution_bias(
    outputs: Sequence[Iterable[str]], prompt_words: Sequence[Iterable[str]] | None = None, top: int = 20
) -> dict[str, Any]:
    """B_D: count each output word that is not a word of its image's prompt (once per image), sort the counts
    descending, min-max normalise them to n_1..n_M (all 1 when max = min), and take the trapezoid area
    `Σ_{i=1}^{M−1} (n_i + n_{i+1}) / 2`. Lower = more concentrated on a few words = more biased.

    B_D grows with M (the number of distinct words), so M is reported beside it, and `B_D_size_free`
    = B_D / (M − 1) ∈ [0, 1] (ours, not in the paper) compares sets of different sizes.
    """
    if prompt_words is None:
        prompt_words = [()] * len(outputs)
    if len(prompt_words) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(prompt_words)} prompt word sets")
    counts: Counter[str] = Counter()
    for out, pw in zip(outputs, prompt_words, strict=True):
        counts.update(set(out) - set(pw))
    values = np.array(sorted(counts.values(), reverse=True), dtype=np.float64)
    m = len(values)
    if m == 0:
        area = 0.0
    else:
        span = values[0] - values[-1]
        n = np.ones(m) if span == 0 else (values - values[-1]) / span
        area = float((n[:-1] + n[1:]).sum() / 2.0)
    return {
        "B_D": area,
        "M": m,
        "B_D_size_free": area / (m - 1) if m > 1 else float("nan"),
        "top_words": dict(counts.most_common(top)),
    }


def jaccard_terms(prompt_words: Iterable[str], output_words: Iterable[str]) -> tuple[float, float, float]:
    """(H_J, H⁺, H⁻) of one image: `1 − |X∩Y|/|X∪Y|`, `|Y∖X|/|Y|`, `|X∖Y|/|X|` (0 when a set is empty)."""
    x, y = set(prompt_words), set(output_words)
    union = x | y
    h_j = 1.0 - len(x & y) / len(union) if union else 0.0
    h_plus = len(y - x) / len(y) if y else 0.0
    h_minus = len(x - y) / len(x) if x else 0.0
    return h_j, h_plus, h_minus


def jaccard_hallucination(
    prompt_words: Sequence[Iterable[str]], output_words: Sequence[Iterable[str]]
) -> dict:
    """Means over images of H_J (Jaccard hallucination), H⁺ (added words) and H⁻ (missed prompt words)."""
    if len(prompt_words) != len(output_words):
        raise ValueError(f"{len(prompt_words)} prompt word sets but {len(output_words)} outputs")
    terms = np.array([jaccard_terms(x, y) for x, y in zip(prompt_words, output_words, strict=True)])
    if len(terms) == 0:
        return {"H_J": float("nan"), "H_plus": float("nan"), "H_minus": float("nan")}
    mean = terms.mean(axis=0)
    return {"H_J": float(mean[0]), "H_plus": float(mean[1]), "H_minus": float(mean[2])}


def generative_miss_rate(
    p_prompt: Sequence[float] | np.ndarray, p_blank: Sequence[float] | None = None
) -> dict:
    """M_G: the share of images whose judge gives the prompt no more probability than a blank text.

    `p_blank` defaults to 1 − p_prompt (a choice between the two texts). Also `mean_1_minus_p`, the mean
    of 1 − P(prompt), which moves before any image flips to a miss.
    """
    p = np.asarray(p_prompt, dtype=np.float64)
    blank = 1.0 - p if p_blank is None else np.asarray(p_blank, dtype=np.float64)
    if len(p) == 0:
        return {"M_G": float("nan"), "mean_1_minus_p": float("nan")}
    return {"M_G": float((p <= blank).mean()), "mean_1_minus_p": float((1.0 - p).mean())}


def extract_all(extractor: Extractor, images: np.ndarray) -> list[str | Iterable[str]]:
    """Run an extractor on every image, through its `batch` method when it has one."""
    batch = getattr(extractor, "batch", None)
    out = list(batch(images)) if batch is not None else [extractor(im) for im in images]
    if len(out) != len(images):
        raise ValueError(f"the extractor returned {len(out)} outputs for {len(images)} images")
    return out


def judge_all(judge: Judge, images: np.ndarray, prompts: Sequence[str], blank: str = " ") -> np.ndarray:
    """P(prompt) against P(blank) for every image, through the judge's `batch` method when it has one."""
    batch = getattr(judge, "batch", None)
    if batch is not None:
        return np.asarray(batch(images, prompts, blank), dtype=np.float64)
    probs = []
    for im, prompt in zip(images, prompts, strict=True):
        p = np.asarray(judge(im, [prompt, blank]), dtype=np.float64)
        probs.append(p[0] / p.sum() if p.sum() > 0 else 0.0)
    return np.asarray(probs)


def t2i_bias(
    images: np.ndarray,
    prompts: Sequence[str],
    extractor: Extractor | None = None,
    judge: Judge | None = None,
    token_filter: TokenFilter | None = None,
    outputs: Sequence[str | Iterable[str]] | None = None,
    blank: str = " ",
) -> dict[str, Any]:
    """B_D, H_J (with H⁺, H⁻) and, when a judge is given, M_G: overall and per prompt.

    `outputs` (captions or object sets, one per image) may be given instead of an extractor, e.g. captions
    computed elsewhere.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    tf = token_filter or TokenFilter()
    if outputs is None:
        if extractor is None:
            raise ValueError("give an extractor (image → caption or object names) or the outputs themselves")
        outputs = extract_all(extractor, images)
    prompt_cache = {p: tf.prompt_words(p) for p in dict.fromkeys(prompts)}
    xs = [prompt_cache[p] for p in prompts]
    ys = [tf.output_words(o, x) for o, x in zip(outputs, xs, strict=True)]
    p_prompt = judge_all(judge, images, prompts, blank) if judge is not None else None

    def figures(idx: np.ndarray) -> dict[str, Any]:
        x = [xs[i] for i in idx]
        y = [ys[i] for i in idx]
        out = {"n": len(idx), **distribution_bias(y, x), **jaccard_hallucination(x, y)}
        if p_prompt is not None:
            out.update(generative_miss_rate(p_prompt[idx]))
        return out

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    report = figures(np.arange(len(prompts)))
    report["per_prompt"] = {p: figures(np.asarray(idx)) for p, idx in groups.items()}
    report["prompt_words"] = {p: w for p, w in prompt_cache.items()}
    return report


# -------------------------------------------------------------------------------- extractors and judges
class ClipJudge:
    """CLIP zero-shot judge: softmax over the texts of the scaled cosine similarities to the image."""

    def __init__(self, bundle: Any, batch_size: int = 64):
        self.bundle = bundle
        self.batch_size = batch_size

    def __call__(self, image: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        f = self.bundle.encode_images(np.asarray(image)[None], self.batch_size)
        t = self.bundle.encode_texts(list(texts))
        return (self.bundle.logit_scale * f @ t.T).softmax(dim=-1)[0].numpy()

    def batch(self, images: np.ndarray, prompts: Sequence[str], blank: str = " ") -> np.ndarray:
        unique = list(dict.fromkeys(prompts))
        t = self.bundle.encode_texts([*unique, blank])
        f = self.bundle.encode_images(images, self.batch_size)
        logits = self.bundle.logit_scale * f @ t.T  # (N, P + 1)
        row = {p: i for i, p in enumerate(unique)}
        idx = np.fromiter((row[p] for p in prompts), dtype=np.int64, count=len(prompts))
        pair = np.stack([logits[np.arange(len(idx)), idx].numpy(), logits[:, -1].numpy()], axis=1)
        pair = np.exp(pair - pair.max(axis=1, keepdims=True))
        return pair[:, 0] / pair.sum(axis=1)


class BlipCaptioner:
    """Captions from a BLIP model in a local transformers folder (the paper: BLIP base, 10 new tokens)."""

    def __init__(
        self,
        path: str | os.PathLike,
        max_new_tokens: int = 10,
        device: str | None = None,
        batch_size: int = 16,
    ):
        path = Path(path).expanduser()
        if not path.is_dir():
            raise InvgenModelError(
                f"no captioner folder at {path} (a local BLIP folder saved by transformers)"
            )
        try:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            self.processor = BlipProcessor.from_pretrained(path)
            self.model = BlipForConditionalGeneration.from_pretrained(path).eval()
        except Exception as e:  # noqa: BLE001 - transformers raises many types for one meaning: not loadable
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InvgenModelError(f"could not load the BLIP captioner in {path}: {first}") from None
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def batch(self, images: np.ndarray) -> list[str]:
        import torch
        from PIL import Image

        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            pils = [Image.fromarray(im).convert("RGB") for im in images[start : start + self.batch_size]]
            inputs = self.processor(images=pils, return_tensors="pt").to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            captions.extend(self.processor.batch_decode(ids, skip_special_tokens=True))
        return captions

    def __call__(self, image: np.ndarray) -> str:
        return self.batch(np.asarray(image)[None])[0]
