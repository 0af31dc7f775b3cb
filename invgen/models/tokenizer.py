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
