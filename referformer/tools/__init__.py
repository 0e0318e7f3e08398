"""referformer.tools."""
