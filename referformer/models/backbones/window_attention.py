"""Window attention shared by the image Swin (2-D) and the Video Swin (3-D) backbones.

Everything here works for any number of window dimensions (2 for Swin, 3 for Video Swin) on
channels-last maps ``[B, *dims, C]``. It reproduces the numerics of the original code
(``models/swin_transformer.py``, the Swin-Transformer-Object-Detection version, and
``models/video_swin_transformer.py``, the Video-Swin-Transformer version) exactly, including
the behaviour on feature maps that are smaller than the window. See docs/backbones.md.

Why not torchvision's / timm's Swin blocks: both decide themselves to disable the shift when the
window covers the (padded) map (torchvision: ``window_size >= padded size -> shift 0``; timm
likewise shrinks window and shift), while the original image Swin always shifts odd blocks by
``window // 2`` on the map padded to window multiples, and the original Video Swin shrinks the
window to the map (with zero shift) and then reads the relative-position bias from the top-left
``N x N`` block of the full-window index table. At the fixture size (96x128 -> 6x8 and 3x4 in the
last two stages) these choices change the output, so the block is written here. Pieces that *are*
identical are reused: torchvision's ``PatchMerging`` (same key names, padding and concatenation
order) and ``StochasticDepth`` (= DropPath).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

# Value the original code puts on attention logits between tokens of different shifted regions.
MASKED_LOGIT = -100.0


def relative_position_index(window_size: Sequence[int]) -> Tensor:
    """Index into the relative-position bias table for every (query, key) pair of a window.

    Args:
        window_size: window extent per dimension, e.g. (7, 7) or (8, 7, 7).
    Returns:
        int64 [N, N], N = prod(window_size); entry (i, j) = mixed-radix number of the offset
        ``coord_i - coord_j + (w - 1)`` per dimension, radix ``2w - 1`` (first dimension most
        significant), exactly the ``relative_position_index`` buffer of the original.
    """
    # Built on the CPU explicitly: a constant that must hold real values even when the module is
    # created under a meta/other default-device context.
    grids = torch.meshgrid(*[torch.arange(w, device="cpu") for w in window_size], indexing="ij")
    coords = torch.stack(grids).flatten(1)  # [ndim, N]
    relative = coords[:, :, None] - coords[:, None, :]  # [ndim, N, N]
    index = torch.zeros_like(relative[0])
    for dim, w in enumerate(window_size):
        index = index * (2 * w - 1) + (relative[dim] + w - 1)
    return index


def window_partition(x: Tensor, window_size: Sequence[int]) -> Tensor:
    """Cut a map into non-overlapping windows.

    Args:
        x: [B, *dims, C], every dim a multiple of the matching window size.
    Returns:
        [B * num_windows, N, C], windows in batch-major then row-major grid order, tokens of a
        window in row-major order (the original's ``window_partition``).
    """
    batch, *dims, channels = x.shape
    ndim = len(dims)
    split_shape = [batch]
    for size, w in zip(dims, window_size):
        split_shape += [size // w, w]
    x = x.view(*split_shape, channels)
    grid_axes = [1 + 2 * i for i in range(ndim)]
    inner_axes = [2 + 2 * i for i in range(ndim)]
    x = x.permute(0, *grid_axes, *inner_axes, 2 * ndim + 1)
    return x.reshape(-1, math.prod(window_size), channels)


def window_reverse(windows: Tensor, window_size: Sequence[int], dims: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: [B * num_windows, N, C] -> [B, *dims, C]."""
    ndim = len(dims)
    grid = [size // w for size, w in zip(dims, window_size)]
    channels = windows.shape[-1]
    x = windows.view(-1, *grid, *window_size, channels)
    order = [0]
    for i in range(ndim):
        order += [1 + i, 1 + ndim + i]
    x = x.permute(*order, 2 * ndim + 1)
    return x.reshape(-1, *dims, channels)


@functools.lru_cache(maxsize=64)
def shifted_window_mask(
    padded_size: tuple[int, ...],
    window_size: tuple[int, ...],
    shift_size: tuple[int, ...],
    device: torch.device,
) -> Tensor:
    """Additive attention mask of shifted windows, as the original computes it.

    The padded map is labelled with region ids by assigning, in order, the slices
    ``[:-w]``, ``[-w:-s]``, ``[-s:]`` of every dimension (later assignments win; with ``s = 0``
    the last slice covers the whole dimension, so that dimension is not split). Tokens of one
    window attend to each other only if their labels agree.

    Args:
        padded_size: map size after padding to window multiples (per dimension).
        window_size, shift_size: effective window and shift per dimension.
    Returns:
        float32 [num_windows, N, N] with 0 (same region) or -100 (different regions).
    """
    # Hand-written: exact compatibility with the original (its slice-assignment labelling,
    # including degenerate slices on maps no larger than the window) is required.
    labels = torch.zeros((1, *padded_size, 1), device=device)
    per_dim = [(slice(None, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window_size, shift_size)]
    for count, region in enumerate(itertools.product(*per_dim)):
        labels[(slice(None), *region, slice(None))] = count
    window_labels = window_partition(labels, window_size).squeeze(-1)  # [num_windows, N]
    difference = window_labels.unsqueeze(1) - window_labels.unsqueeze(2)
    return torch.zeros_like(difference).masked_fill(difference != 0, MASKED_LOGIT)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    Same parameters and buffer as the original ``WindowAttention`` / ``WindowAttention3D``:
    ``relative_position_bias_table`` [prod(2w - 1), num_heads], ``relative_position_index``
    (int64 [N, N] constant, persistent so that checkpoint keys match), ``qkv``, ``proj``.
    """

    def __init__(self, dim: int, window_size: Sequence[int], num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        table_rows = math.prod(2 * w - 1 for w in self.window_size)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_rows, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, num_tokens: int) -> Tensor:
        """[num_heads, N, N] bias for windows of ``num_tokens`` tokens.

        For a window smaller than the full one (Video Swin on small maps) the original reads the
        top-left ``N x N`` block of the full index table, whatever the window's geometry; so do we.
        """
        index = self.relative_position_index[:num_tokens, :num_tokens].reshape(-1)
        bias = self.relative_position_bias_table[index].view(num_tokens, num_tokens, -1)
        return bias.permute(2, 0, 1)

    def forward(self, windows: Tensor, mask: Tensor | None = None) -> Tensor:
        """
        Args:
            windows: [B, num_windows, N, C] tokens of each window.
            mask: optional [num_windows, N, N] additive mask (shifted windows).
        Returns:
            [B, num_windows, N, C].
        """
        batch, num_windows, num_tokens, channels = windows.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(windows).view(batch, num_windows, num_tokens, 3, self.num_heads, head_dim)
        query, key, value = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # [B, nW, heads, N, hd] each
        bias = self.relative_position_bias(num_tokens).to(query.dtype)  # [heads, N, N]
        # Original: softmax(q * scale @ k^T + bias (+ mask)) @ v. Both calls below are 4-D with a
        # 4-D mask broadcast over dim 0 (a 3-D or 5-D call falls back to slower kernels).
        if mask is None:
            shape = (batch * num_windows, self.num_heads, num_tokens, head_dim)
            attn_mask = bias.unsqueeze(0)  # [1, heads, N, N], same for every window
        else:
            shape = (batch, num_windows * self.num_heads, num_tokens, head_dim)
            attn_mask = bias.unsqueeze(0) + mask.to(query.dtype).unsqueeze(1)  # [nW, heads, N, N]
            attn_mask = attn_mask.reshape(1, num_windows * self.num_heads, num_tokens, num_tokens)
        out = F.scaled_dot_product_attention(
            query.reshape(shape), key.reshape(shape), value.reshape(shape), attn_mask=attn_mask
        )
        out = out.view(batch, num_windows, self.num_heads, num_tokens, head_dim)
        out = out.transpose(2, 3).reshape(batch, num_windows, num_tokens, channels)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, keys ``fc1`` / ``fc2`` as in the original (dropout 0 there)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on a channels-last map of any dimensionality.

    The window and shift are given per call (the stage decides them from the map size, see
    :class:`SwinStage`), so the same block serves the image and the video version.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: Sequence[int], mlp_ratio: float = 4.0,
        qkv_bias: bool = True, drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, window_size: tuple[int, ...], shift_size: tuple[int, ...], mask: Tensor | None
    ) -> Tensor:
        """
        Args:
            x: [B, *dims, C] channels-last map.
            window_size, shift_size: effective window and cyclic shift per dimension.
            mask: [num_windows, N, N] shifted-window mask, used when any shift is non-zero.
        Returns:
            [B, *dims, C].
        """
        dims = x.shape[1:-1]
        shortcut = x
        x = self.norm1(x)
        # Zero-pad (after norm1) at the end of every dimension to window multiples; the padded
        # tokens take part in attention (no padding mask), as in the original.
        pads = [(-size) % w for size, w in zip(dims, window_size)]
        if any(pads):
            pad_arg = [0, 0]
            for pad in reversed(pads):
                pad_arg += [0, pad]
            x = F.pad(x, pad_arg)
        padded = tuple(x.shape[1:-1])
        spatial_axes = tuple(range(1, 1 + len(dims)))
        shifted = any(s > 0 for s in shift_size)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift_size), dims=spatial_axes)
        windows = window_partition(x, window_size)
        windows = windows.view(x.shape[0], -1, *windows.shape[1:])
        windows = self.attn(windows, mask if shifted else None)
        x = window_reverse(windows.flatten(0, 1), window_size, padded)
        if shifted:
            x = torch.roll(x, shifts=tuple(shift_size), dims=spatial_axes)
        if any(pads):
            x = x[(slice(None), *[slice(0, size) for size in dims])]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """A stack of blocks alternating regular and shifted windows (``layers.{s}`` of the original).

    ``shrink_window_to_input`` selects the small-map policy:

    * False (image Swin, Swin-Transformer-Object-Detection): the window never changes; the map is
      padded to window multiples and odd blocks always shift by ``window // 2``, even when one
      window covers the whole padded map.
    * True (Video Swin): in every dimension where the map is not larger than the window, the
      window shrinks to the map size and the shift in that dimension becomes 0.

    Patch merging is not part of the forward; ``downsample`` (image Swin only, to keep its key
    names ``layers.{s}.downsample.*``) is applied by the backbone.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: Sequence[int],
        drop_path: Sequence[float], shrink_window_to_input: bool, qkv_bias: bool = True,
        mlp_ratio: float = 4.0, downsample: nn.Module | None = None, use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in self.window_size)
        self.shrink_window_to_input = shrink_window_to_input
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, self.window_size, mlp_ratio, qkv_bias, drop_path[i]) for i in range(depth)
        )
        self.downsample = downsample

    def effective_window(self, dims: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window, shift) used for a map of size ``dims`` (the original's ``get_window_size``)."""
        if not self.shrink_window_to_input:
            return self.window_size, self.shift_size
        window = tuple(min(size, w) for size, w in zip(dims, self.window_size))
        shift = tuple(0 if size <= w else s for size, w, s in zip(dims, self.window_size, self.shift_size))
        return window, shift

    def forward(self, x: Tensor) -> Tensor:
        """[B, *dims, C] -> [B, *dims, C] (before any patch merging)."""
        dims = tuple(x.shape[1:-1])
        window, shift = self.effective_window(dims)
        no_shift = (0,) * len(dims)
        mask = None
        if any(s > 0 for s in shift):
            padded = tuple(math.ceil(size / w) * w for size, w in zip(dims, window))
            mask = shifted_window_mask(padded, window, shift, x.device)
        for index, block in enumerate(self.blocks):
            block_shift = shift if index % 2 == 1 else no_shift
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, window, block_shift, mask, use_reentrant=False)
            else:
                x = block(x, window, block_shift, mask)
        return x


def drop_path_rates(depths: Sequence[int], drop_path_rate: float) -> list[list[float]]:
    """Stochastic-depth rate of every block, linearly increasing over all blocks, split by stage."""
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out


def init_swin_weights(module: nn.Module) -> None:
    """Original initialisation: truncated normal (std 0.02) linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
