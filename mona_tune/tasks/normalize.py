"""FNO's per-grid-point Gaussian normaliser: fitted on training samples, shared by the tasks."""

from __future__ import annotations

from torch import Tensor


class UnitGaussianNormalizer:
    """Per-grid-point mean/std over the samples (axis 0), as FNO's; ``eps`` keeps std = 0 safe."""

    def __init__(self, x: Tensor, eps: float = 1e-5):
        self.mean = x.mean(0)
        self.std = x.std(0)
        self.eps = eps
        self._moved: dict = {}

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std + eps) on the device and in the dtype of ``like``, moved once."""
        key = (like.device, like.dtype)
        if key not in self._moved:
            self._moved[key] = (self.mean.to(like), (self.std + self.eps).to(like))
        return self._moved[key]

    def encode(self, x: Tensor) -> Tensor:
        mean, scale = self._stats(x)
        return (x - mean) / scale

    def decode(self, x: Tensor) -> Tensor:
        mean, scale = self._stats(x)
        return x * scale + mean

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_moved": {}}  # device copies stay behind
