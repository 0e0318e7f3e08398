"""referformer.synthetic."""
