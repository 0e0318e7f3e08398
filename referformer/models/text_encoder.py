"""Text side: RoBERTa (transformers ``RobertaModel``) and the ``FeatureResizer`` (768 -> hidden_dim)."""

from __future__ import annotations

from torch import Tensor, nn

from referformer.config import TextEncoderConfig


def build_roberta(config: TextEncoderConfig) -> nn.Module:
    """A randomly initialised ``transformers.RobertaModel`` (with pooler) of the given configuration.

    Nothing is downloaded: official weights arrive through the checkpoint. The attention
    implementation is pinned (eager reproduces the fixtures).
    """
    from transformers import RobertaConfig, RobertaModel

    rc = RobertaConfig(**config.roberta_kwargs())
    rc._attn_implementation = config.attn_implementation
    return RobertaModel(rc, add_pooling_layer=True)


class FeatureResizer(nn.Module):
    """Linear + LayerNorm(eps 1e-12) + dropout (keys ``resizer.fc``, ``resizer.layer_norm``)."""

    def __init__(self, input_feat_size: int, output_feat_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(input_feat_size, output_feat_size, bias=True)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[..., input_feat_size] -> [..., output_feat_size]."""
        return self.dropout(self.layer_norm(self.fc(x)))


def run_roberta(text_encoder: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """input_ids, attention_mask: int64 [B, L] -> (last_hidden_state [B, L, D], pooler_output [B, D])."""
    out = text_encoder(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state, out.pooler_output


__all__ = ["build_roberta", "FeatureResizer", "run_roberta"]
