"""referformer.engine."""
