"""referformer.models.backbones."""
