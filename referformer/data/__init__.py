"""referformer.data."""
