"""A real CLIP BPE tokenizer built offline from the merges that open-clip-torch ships.

open-clip-torch bundles `bpe_simple_vocab_16e6.txt.gz`, the byte-pair merges of OpenAI's CLIP. The
vocabulary is derived from them exactly as CLIP does (256 byte symbols, the same with `</w>`, one token
per merge, then the two special tokens), so token ids equal those of `openai/clip-vit-large-patch14`.
"""

from __future__ import annotations

import functools
import gzip

from transformers import CLIPTokenizer

# CLIP keeps the first 49152 - 256 - 2 merges (the file holds more).
_NUM_MERGES = 49152 - 256 - 2


@functools.lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : _NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def build_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The CLIP tokenizer, built without any download."""
    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


# T5's real vocabulary is a 32k SentencePiece model that only ships with the hub checkpoints. Offline, a small
# Unigram vocabulary over a fixed word list stands in: frequent prompt words are one piece each and any other
# ASCII text falls back to single characters, so every prompt still maps to distinct, stable ids.
_T5_WORDS = (
    "a an the of in on at with and or to for from by near under over behind front photo picture image portrait "
    "painting drawing render sketch close up wide shot high quality detailed realistic style art of digit zero one "
    "two three four five six seven eight nine person people man woman men women boy girl child children adult "
    "old young doctor nurse engineer teacher scientist lawyer chef pilot farmer artist ceo worker student "
    "firefighter police officer cat dog bird horse fish car bus bike house city street park forest beach "
    "mountain river sea sky sun moon night day light dark red green blue yellow orange purple pink brown black "
    "white gray colorful small large big tiny tall short happy sad smiling face hair eyes hand standing sitting "
    "walking running wearing holding looking"
).split()
_T5_CHARS = [chr(c) for c in range(33, 127)]


def build_t5_tokenizer(model_max_length: int = 512):
    """A stock `T5TokenizerFast` (transformers' T5 Unigram layout) over a small fixed vocabulary, built offline.

    Ids follow T5's layout (`<pad>`=0, `</s>`=1, `<unk>`=2, then pieces) and every prompt ends with `</s>`, so
    SD3's and Flux's `encode_prompt` treat it exactly like the real one. It saves to and loads from a
    `tokenizer.json` like any other fast tokenizer.
    """
    from transformers import T5TokenizerFast

    # Unigram picks the segmentation with the highest total score: a whole word (one piece) always beats
    # spelling it out, and "▁" plus characters covers everything else.
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -10.0)]
    seen = {piece for piece, _ in vocab}
    for word in _T5_WORDS:
        piece = "▁" + word
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, -8.0))
    vocab += [(c, -12.0) for c in _T5_CHARS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=model_max_length)
