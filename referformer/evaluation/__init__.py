"""referformer.evaluation."""
