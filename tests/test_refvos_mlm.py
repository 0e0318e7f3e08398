"""MLM fine-tuning of RefVOS's BERT: weight sharing, the 80/10/10 masking, loss decrease, save / load."""

from __future__ import annotations

import pytest
import torch

from referformer.config import BertTextConfig, RefVOSConfig
from referformer.engine.text_mlm import (
    MLMConfig,
    finetune_mlm,
    mlm_batches,
    mlm_loss,
    mlm_model_from_encoder,
    run_mlm_recipe,
    train_wordpiece_tokenizer,
)
from referformer.errors import UserError
from referformer.models.bert import load_encoder_weights, save_encoder_weights
from referformer.models.refvos import build_refvos

CORPUS = [
    "the red car on the left", "a dog running fast", "the man holding a white umbrella",
    "a small cat on the sofa", "the person riding a bike", "a black dog jumping over a fence",
    "the woman in a blue dress", "a white car parked on the right",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(CORPUS, vocab_size=150)


def tiny_refvos(tokenizer, **changes):
    text = BertTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64)
    return build_refvos(RefVOSConfig(backbone="resnet18", aspp_channels=32, text_encoder=text, **changes))


def test_tokenizer_is_bert_like(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("The RED car")["input_ids"])
    assert tokens == ["[CLS]", "the", "red", "car", "[SEP]"]
    assert (tokenizer.pad_token_id, tokenizer.mask_token) == (0, "[MASK]")


def test_mlm_model_shares_the_encoder_weights(tokenizer):
    model = tiny_refvos(tokenizer)
    mlm = mlm_model_from_encoder(model.text_encoder)
    assert mlm.bert is model.text_encoder
    embeddings = model.text_encoder.embeddings.word_embeddings.weight
    assert mlm.cls.predictions.decoder.weight.data_ptr() == embeddings.data_ptr()


def test_masking_follows_the_15_80_10_10_rule(tokenizer):
    sentences = [" ".join(CORPUS)] * 64  # long rows: many tokens for the statistics
    batch = next(mlm_batches(sentences, tokenizer, batch_size=64, seed=0))
    original = torch.tensor([tokenizer(s)["input_ids"] for s in sentences])
    special = (original == tokenizer.cls_token_id) | (original == tokenizer.sep_token_id)
    chosen = batch["labels"] != -100
    assert not (chosen & special).any()
    assert torch.equal(batch["labels"][chosen], original[chosen])
    fraction = chosen.sum() / (~special).sum()
    assert 0.12 < fraction < 0.18, float(fraction)
    to_mask = (batch["input_ids"][chosen] == tokenizer.mask_token_id).float().mean()
    unchanged = (batch["input_ids"][chosen] == original[chosen]).float().mean()
    assert 0.75 < to_mask < 0.85, float(to_mask)
    assert 0.05 < unchanged < 0.16, float(unchanged)  # 10% kept + random replacements that hit the same id


def test_mlm_step_reduces_the_loss_and_updates_refvos_text_encoder(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_refvos(tokenizer)
    before_weights = model.text_encoder.embeddings.word_embeddings.weight.detach().clone()
    mlm = mlm_model_from_encoder(model.text_encoder)

    def held_out_loss() -> float:  # the same masked batches before and after
        mlm.eval()
        batches = mlm_batches(CORPUS, tokenizer, batch_size=8, seed=123)
        with torch.no_grad():
            return sum(mlm_loss(mlm, next(batches)).item() for _ in range(5)) / 5

    before = held_out_loss()
    losses = finetune_mlm(CORPUS, mlm, tokenizer, MLMConfig(steps=60, batch_size=8, lr=3e-3), progress=False)
    after = held_out_loss()
    assert len(losses) == 60
    assert after < 0.7 * before, (before, after)
    assert not torch.equal(model.text_encoder.embeddings.word_embeddings.weight, before_weights)

    path = save_encoder_weights(mlm.bert, tmp_path / "bert_mlm.safetensors")
    fresh = tiny_refvos(tokenizer)
    fresh.load_text_encoder(path)
    for key, value in model.text_encoder.state_dict().items():
        torch.testing.assert_close(fresh.text_encoder.state_dict()[key], value)


def test_recipe_saves_weights_loadable_with_a_pooler(tokenizer, tmp_path):
    torch.manual_seed(0)
    source = tiny_refvos(tokenizer)
    losses = run_mlm_recipe(CORPUS, source.text_encoder, tokenizer, tmp_path / "bert.safetensors",
                            MLMConfig(steps=2, batch_size=4), progress=False)
    assert len(losses) == 2
    target = tiny_refvos(tokenizer, sentence_embedding="pooler")  # has a pooler the file lacks
    pooler_before = target.text_encoder.pooler.dense.weight.detach().clone()
    target.load_text_encoder(tmp_path / "bert.safetensors")
    torch.testing.assert_close(target.text_encoder.embeddings.word_embeddings.weight,
                               source.text_encoder.embeddings.word_embeddings.weight)
    assert torch.equal(target.text_encoder.pooler.dense.weight, pooler_before)


def test_load_errors_name_the_problem(tokenizer, tmp_path):
    model = tiny_refvos(tokenizer)
    with pytest.raises(UserError, match="not found"):
        load_encoder_weights(model.text_encoder, tmp_path / "missing.safetensors")
    other = build_refvos(RefVOSConfig(backbone="resnet18", aspp_channels=32, text_encoder=BertTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)))
    path = save_encoder_weights(other.text_encoder, tmp_path / "one_layer.safetensors")
    with pytest.raises(UserError, match="missing"):
        load_encoder_weights(model.text_encoder, path)
    with pytest.raises(UserError, match="sentence"):
        finetune_mlm(["", "  "], mlm_model_from_encoder(model.text_encoder), tokenizer, MLMConfig(steps=1))
