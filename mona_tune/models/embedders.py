"""Target embedders: map a target input to the token grid the pretrained encoder expects.

Both return channels-last tokens ``(N, H', W', D)`` laid out like the output of a timm Swin
``patch_embed`` (``output_fmt='NHWC'``), so the encoder body (``layers`` + ``norm``) takes them
unchanged. ``(H', W')`` is the encoder's patch grid and ``D`` its width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Embedder2D(nn.Module):
    """ORCA's 2D embedder: resize to the encoder's image size, strided-conv patches, LayerNorm.

    ``x (N, C, H, W)`` is resized (bilinear) to ``img_size × img_size``, cut into
    ``patch_size × patch_size`` patches by a convolution with kernel = stride = patch size that
    projects each patch to ``embed_dim``, then normalised per token.
    """

    kind = "2d"

    def __init__(self, in_channels: int, img_size: int, patch_size: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.in_channels, self.img_size, self.patch_size = in_channels, img_size, patch_size
        self.embed_dim = embed_dim
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)
        x = self.proj(x)  # (N, D, H', W')
        return self.norm(x.permute(0, 2, 3, 1))  # (N, H', W', D)


class Embedder1D(nn.Module):
    """ORCA's 1D embedder: cut the ``C × L`` sequence into pieces, project, LayerNorm, position.

    The sequence is padded at the end (zeros) to a multiple of the number of pieces
    ``N = H'·W'`` (one piece per token of the encoder's patch grid), each piece of ``C × L/N``
    values is projected linearly to ``embed_dim`` and normalised, and a learned positional
    embedding is added. The ``N`` tokens are laid out row by row on the ``H' × W'`` grid, because
    the encoder here is a Swin body, which attends within 2D windows. (ORCA pairs 1D tasks with a
    RoBERTa encoder and a sequence of tokens; this keeps one encoder family for every task.)
    """

    kind = "1d"

    def __init__(self, in_channels: int, length: int, grid: tuple[int, int], embed_dim: int):
        super().__init__()
        self.in_channels, self.length, self.grid = in_channels, length, tuple(grid)
        self.embed_dim = embed_dim
        self.num_tokens = grid[0] * grid[1]
        self.piece = math.ceil(length / self.num_tokens)
        self.proj = nn.Linear(in_channels * self.piece, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        n, c, length = x.shape
        pad = self.piece * self.num_tokens - length
        if pad:
            x = F.pad(x, (0, pad))
        # (N, C, T, piece) -> (N, T, C * piece): one row of values per token
        x = x.reshape(n, c, self.num_tokens, self.piece).permute(0, 2, 1, 3).reshape(
            n, self.num_tokens, c * self.piece)
        x = self.norm(self.proj(x)) + self.pos
        return x.reshape(n, *self.grid, self.embed_dim)


def init_from_source(embedder: nn.Module, source_patch_embed: nn.Module) -> None:
    """Start a target embedder from the source patch embedding, as ORCA does by default.

    2D: the projection is the source's strided convolution (same kernel and width, since the
    target embedder cuts the same patches); where the target has another number of input channels
    than the source, timm's ``adapt_input_conv`` adapts it (one channel: the sum over the source
    channels; more: the source channels repeated and scaled by source/target channels), so an
    input replicated across channels projects as the source image does. The bias is copied.
    1D: the projection of a piece of sequence has no counterpart in the source; it keeps its
    random start. Both copy the source LayerNorm when widths agree.

    Nothing here draws random numbers, so every method that builds its model from the same seed
    starts from the same embedder (methods then differ only in stage 1).
    """
    if embedder.kind == "2d":
        _copy_projection(embedder.proj, source_patch_embed.proj)
    copy_source_norm(embedder, source_patch_embed)


def _copy_projection(proj: nn.Conv2d, source_proj: nn.Conv2d) -> None:
    from timm.models import adapt_input_conv

    w = source_proj.weight.detach()
    if w.shape[0] != proj.out_channels or tuple(w.shape[2:]) != tuple(proj.kernel_size):
        raise ValueError(f"source patch projection {tuple(w.shape)} does not fit the target's "
                         f"{tuple(proj.weight.shape)} (width and patch size come from the source)")
    with torch.no_grad():
        proj.weight.copy_(adapt_input_conv(proj.in_channels, w.float(), base_chans=w.shape[1]))
        if proj.bias is not None:
            if source_proj.bias is not None:
                proj.bias.copy_(source_proj.bias)
            else:
                proj.bias.zero_()


def copy_source_norm(embedder: nn.Module, source_patch_embed: nn.Module) -> None:
    """Copy the source patch embedding's LayerNorm into the embedder's, when widths agree."""
    norm = getattr(source_patch_embed, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight.shape == embedder.norm.weight.shape:
        with torch.no_grad():
            embedder.norm.weight.copy_(norm.weight)
            embedder.norm.bias.copy_(norm.bias)
