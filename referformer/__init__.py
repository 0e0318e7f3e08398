"""referformer: referring video object segmentation with ReferFormer (CVPR 2022).

The public API is re-exported here as it lands; see README.md.
"""

__version__ = "0.1.0"
