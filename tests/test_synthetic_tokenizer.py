"""The synthetic text stack: a download-free BPE tokenizer with RoBERTa's special tokens."""

from __future__ import annotations

import numpy as np

from referformer.synthetic.grammar import grammar_vocabulary
from referformer.synthetic.scenes import SceneConfig
from referformer.synthetic.tokenizer import (
    build_synthetic_tokenizer,
    synthetic_text_config,
    synthetic_tokenizer,
    synthetic_vocab_size,
)
from referformer.synthetic.writer import make_video


def _captions() -> list[str]:
    cfg = SceneConfig(height=64, width=96, num_frames=8)
    return [e.text for i in range(3) for e in make_video(0, "train", i, cfg).expressions]


def test_special_tokens_have_roberta_ids():
    tok = synthetic_tokenizer()
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    ids = tok.encode("the red circle").ids
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) == 5  # <s> the red circle </s>


def test_every_grammar_word_is_one_token_and_round_trips():
    tok = synthetic_tokenizer()
    words = grammar_vocabulary()
    for word in words:
        ids = tok.encode(word).ids
        assert len(ids) == 3, (word, tok.encode(word).tokens)
        assert tok.decode(ids, skip_special_tokens=True).strip() == word
    assert synthetic_vocab_size() == tok.get_vocab_size() < 1000


def test_hugging_face_directory_loads_and_feeds_a_roberta(tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer, RobertaConfig, RobertaModel

    path = build_synthetic_tokenizer(tmp_path / "tok")
    again = build_synthetic_tokenizer(tmp_path / "tok2")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert (path / name).read_bytes() == (again / name).read_bytes()  # deterministic

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    captions = _captions()
    batch = tokenizer(captions, padding="longest", return_tensors="pt")
    ids = batch["input_ids"]
    lengths = batch["attention_mask"].sum(1)
    assert (ids[:, 0] == 0).all()
    assert all(ids[i, n - 1] == 2 and (ids[i, n:] == 1).all() for i, n in enumerate(lengths.tolist()))
    assert [len(c.split()) + 2 for c in captions] == lengths.tolist()  # one token per word
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert [d.strip() for d in decoded] == captions
    assert int(lengths.max()) <= tokenizer.model_max_length

    kwargs = synthetic_text_config()
    assert kwargs["vocab_size"] == len(tokenizer) and kwargs["max_position_embeddings"] == 36
    assert AutoConfig.from_pretrained(str(path)).to_dict()["hidden_size"] == kwargs["hidden_size"]
    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(**kwargs)).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=batch["attention_mask"])
    assert out.last_hidden_state.shape == (len(captions), ids.shape[1], kwargs["hidden_size"])
    assert out.pooler_output.shape == (len(captions), kwargs["hidden_size"])
    assert np.isfinite(out.pooler_output.numpy()).all()
