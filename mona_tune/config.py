"""Typed configuration, in one place.

``TrainConfig`` describes one training run (one search trial). The search models
(``SearchConfig``, ``SearchSpace``) live below it. Every field of ``TrainConfig`` may be searched
or fixed by a search space.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["mona", "emb", "orca", "ft", "scratch"]
METHODS: tuple[str, ...] = ("mona", "emb", "orca", "ft", "scratch")


class TrainConfig(BaseModel):
    """One two-stage training run.

    Stage 1 lasts ``warmup_epochs`` epochs and changes only the target embedder (method.md);
    stage 2 lasts ``epochs`` epochs and trains everything with AdamW, a linear learning-rate
    warm-up over ``lr_warmup_epochs`` and cosine decay.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train
    task: str = "darcy"
    method: Method = "mona"

    # stage 1 (the searched hyperparameters of MoNA)
    lam: float = Field(0.5, ge=0, description="λ, weight of the outer (alignment+uniformity) loss")
    inner_lr: float = Field(1e-3, gt=0, description="α, step size of the simulated inner update")
    warmup_epochs: int = Field(2, ge=0, description="stage-1 epochs")
    first_order: bool = Field(False, description="first-order (finite-difference) MoNA gradient")
    stage1_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the embedder in stage 1")
    source_batch_size: int = Field(32, ge=2, description="labelled source images per stage-1 step")
    uniformity_t: float = Field(2.0, gt=0)

    # stage 2
    epochs: int = Field(5, ge=1, description="stage-2 (fine-tuning) epochs")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-3, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    lr_warmup_epochs: float = Field(1.0, ge=0, description="linear learning-rate warm-up of stage 2")
    grad_clip: float | None = Field(1.0, gt=0)

    # data
    data_dir: str | None = Field(None, description="real or generated files; None = embedded default")
    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training set held out")
    resolution: int | None = Field(None, ge=2, description="grid points per side after subsampling")
    beta: float = Field(0.1, gt=0, description="PDEBench Darcy β")

    # source model
    source_model: str | None = Field(None, description="timm model name; None = embedded default")
    weights: str | None = Field(None, description="local checkpoint / safetensors for source_model")
    source_data: str | None = Field(None, description="'digits' (default) or 'cifar10:DIR'")
    init_embedder: str | None = Field(None, description="exported embedder directory; skips stage 1")

    # diagnostics and runtime
    probe_every: int = Field(0, ge=0, description="measure source_probe_error every k epochs (0: end)")
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    num_threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.weights and not self.source_model:
            raise ValueError("weights needs source_model (the timm architecture the file belongs to)")
        if self.first_order and self.method != "mona":
            raise ValueError("first_order applies only to method 'mona'")
        if self.source_data and not (
            self.source_data == "digits" or self.source_data.startswith("cifar10:")
        ):
            raise ValueError("source_data must be 'digits' or 'cifar10:DIR'")
        return self

    @property
    def stage1_epochs(self) -> int:
        """Epochs of stage 1 actually run: none for ft/scratch or with an exported embedder."""
        if self.method in ("ft", "scratch") or self.init_embedder:
            return 0
        return self.warmup_epochs
