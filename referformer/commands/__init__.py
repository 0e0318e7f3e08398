"""referformer.commands."""
