"""referformer.inference."""
