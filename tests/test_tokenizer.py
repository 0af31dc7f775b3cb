import open_clip

from invgen.models.tokenizer import build_clip_tokenizer


def test_token_ids_match_open_clip():
    tok = build_clip_tokenizer()
    for text in ["a photo of the digit 3", "Hello, World! It's 2026 & naïve café", "   spaces   and\ttabs "]:
        ours = tok(text).input_ids
        ref = open_clip.tokenize([text])[0].tolist()
        assert ours == ref[: len(ours)]
        assert ref[len(ours)] == 0  # open_clip pads with 0 after the end token
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407


def test_padding_and_truncation():
    tok = build_clip_tokenizer()
    ids = tok(["a b", "a " * 200], padding="max_length", max_length=77, truncation=True).input_ids
    assert all(len(x) == 77 for x in ids)
    assert ids[1][-1] == 49407


def test_save_and_reload(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_clip_tokenizer()
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a photo of the digit 7").input_ids == tok("a photo of the digit 7").input_ids
