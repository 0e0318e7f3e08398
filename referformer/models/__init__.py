"""referformer.models."""
