"""Target predictors: map encoder tokens ``(N, h, w, D)`` to the target's output space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ClassificationHead(nn.Module):
    """Average-pool the tokens, one linear layer to ``num_classes`` logits."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(tokens.mean(dim=(1, 2)))


class DenseHead(nn.Module):
    """ORCA's dense predictor.

    Each of the ``h × w`` output tokens is mapped by one shared linear layer to ``r² · 3`` values
    (``r = img_size / h``, the encoder's total downsampling), the values are pixel-shuffled into a
    3-channel ``img_size × img_size`` image, the 3 channels are adaptively average-pooled to
    ``out_channels``, and the image is adaptively average-pooled to the target's spatial shape.

    Departure: where the target is finer than the encoder's image (the small embedded encoder
    works at 32×32 while Darcy is 85×85), adaptive average pooling would only replicate pixels
    into blocks, so that axis is resized bilinearly instead. At paper scale (224 → 85) the head is
    exactly ORCA's. A 1D target ``(L,)`` reads the image row by row and pools it to length L.
    """

    def __init__(self, in_dim: int, token_grid: tuple[int, int], img_size: int, out_channels: int,
                 out_shape: tuple[int, ...]):
        super().__init__()
        h, w = token_grid
        if img_size % h or img_size % w or img_size // h != img_size // w:
            raise ValueError(f"token grid {token_grid} does not tile a {img_size}² image")
        self.r = img_size // h
        self.img_size, self.out_channels, self.out_shape = img_size, out_channels, tuple(out_shape)
        if len(self.out_shape) not in (1, 2):
            raise ValueError(f"dense targets are 1D or 2D, not {self.out_shape}")
        self.fc = nn.Linear(in_dim, self.r * self.r * 3)

    def forward(self, tokens: Tensor) -> Tensor:
        n, h, w, _ = tokens.shape
        x = self.fc(tokens).permute(0, 3, 1, 2)  # (N, 3r², h, w)
        x = F.pixel_shuffle(x, self.r)  # (N, 3, img, img)
        size = x.shape[-2:]
        # adaptive pooling over the channel axis: (N, HW, 3) -> (N, HW, K)
        x = F.adaptive_avg_pool1d(x.flatten(2).transpose(1, 2), self.out_channels)
        x = x.transpose(1, 2).reshape(n, self.out_channels, *size)
        if len(self.out_shape) == 2:
            return _fit_2d(x, self.out_shape)
        return _fit_1d(x.flatten(2), self.out_shape[0])


class SequenceHead(nn.Module):
    """ORCA's dense head for a sequence encoder: each of the ``T`` tokens is mapped by one shared
    linear layer to its piece of the output (``out_channels × piece`` values), the pieces are laid
    end to end, and the sequence is cut to the target's length (the embedder padded its end) or,
    for another length, pooled or interpolated to it."""

    def __init__(self, in_dim: int, piece: int, out_channels: int, out_shape: tuple[int, ...]):
        super().__init__()
        if len(out_shape) != 1:
            raise ValueError(f"a sequence head gives 1D targets, not {tuple(out_shape)}")
        self.piece, self.out_channels, self.length = piece, out_channels, int(out_shape[0])
        self.fc = nn.Linear(in_dim, out_channels * piece)

    def forward(self, tokens: Tensor) -> Tensor:
        n, h, w, _ = tokens.shape
        x = self.fc(tokens).reshape(n, h * w, self.out_channels, self.piece)
        x = x.permute(0, 2, 1, 3).reshape(n, self.out_channels, h * w * self.piece)
        if 0 <= x.shape[-1] - self.length < self.piece:
            return x[..., :self.length]
        return _fit_1d(x, self.length)


def _fit_2d(x: Tensor, shape: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    if all(t <= s for t, s in zip(shape, x.shape[-2:])):
        return F.adaptive_avg_pool2d(x, shape)
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False)


def _fit_1d(x: Tensor, length: int) -> Tensor:
    if x.shape[-1] >= length:
        return F.adaptive_avg_pool1d(x, length)
    return F.interpolate(x, size=length, mode="linear", align_corners=False)
