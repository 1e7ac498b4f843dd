"""Typed configuration, in one place.

``TrainConfig`` describes one training run (one search trial). The search models
(``SearchConfig``, ``SearchSpace``) live below it. Every field of ``TrainConfig`` may be searched
or fixed by a search space.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["mona", "emb", "orca", "ft", "scratch"]
METHODS: tuple[str, ...] = ("mona", "emb", "orca", "ft", "scratch")
# the names of models.source.SOURCE_DATASETS; "cifar10" takes a directory (cifar10:DIR), "text"
# a file of labelled text (text:FILE)
SOURCE_DATA: tuple[str, ...] = ("digits", "fractals", "cifar10", "text")
SOURCE_DATA_WITH_ARGUMENT: dict[str, str] = {"cifar10": "DIR", "text": "FILE"}


class TrainConfig(BaseModel):
    """One two-stage training run.

    Stage 1 lasts ``warmup_epochs`` epochs and changes only the target embedder (method.md);
    stage 2 lasts ``epochs`` epochs and trains everything with AdamW, a linear learning-rate
    warm-up over ``lr_warmup_epochs`` and cosine decay.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train
    task: str = Field("darcy", description="task name (darcy, pdebench-darcy, advection, "
                      "burgers, diffusion-reaction, diffusion-sorption)")
    method: Method = Field("mona", description="mona, emb, orca, ft or scratch")

    # stage 1 (the searched hyperparameters of MoNA)
    lam: float = Field(0.5, ge=0, description="λ: weight of MoNA's outer (alignment + "
                       "uniformity) loss")
    inner_lr: float = Field(1e-3, gt=0, description="α: step size of MoNA's simulated inner "
                            "fine-tuning step")
    warmup_epochs: int = Field(2, ge=0, description="stage-1 epochs (embedder only)")
    first_order: bool = Field(False, description="first-order (finite-difference) MoNA gradient")
    stage1_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the embedder in stage 1")
    source_batch_size: int = Field(32, ge=2, description="labelled source images per stage-1 step")
    uniformity_t: float = Field(2.0, gt=0, description="t of the uniformity loss (the paper's 2)")
    orca_distance: Literal["otdd", "mmd"] = Field(
        "otdd", description="orca's stage-1 distance: otdd (the optimal-transport dataset "
        "distance, as published) or mmd (a Gaussian-kernel MMD: cheaper, no labels)")

    # stage 2
    epochs: int = Field(5, ge=1, description="stage-2 epochs (fine-tuning everything)")
    batch_size: int = Field(4, ge=1, description="target batch of both stages (the paper's 4)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of stage 2")
    weight_decay: float = Field(5e-3, ge=0, description="AdamW weight decay of both stages")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas of both stages")
    lr_warmup_epochs: float = Field(1.0, ge=0, description="stage-2 epochs of linear "
                                    "learning-rate warm-up")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clipping; none "
                                    "switches it off")

    # data
    data_dir: str | None = Field(None, description="directory of real data files (default: "
                                 "the embedded generated data)")
    n_train: int | None = Field(None, ge=1, description="training samples read from the data "
                                "(default: the task's)")
    n_test: int | None = Field(None, ge=1, description="test samples read from the data "
                               "(default: the task's)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="validation samples as a share of "
                                "the training samples (darcy: the smooth2 samples after the test "
                                "block where the file holds them, else held out of the training "
                                "samples)")
    resolution: int | None = Field(None, ge=2, description="grid points per side after "
                                   "subsampling (default: 85 for darcy, 64 for pdebench-darcy; "
                                   "1D tasks: cells, ORCA's 256 for advection, else 1024, or "
                                   "the generated file's 128)")
    beta: float | None = Field(None, gt=0, description="PDEBench β: the Darcy forcing "
                               "(reads 2D_DarcyFlow_beta<β>_Train.hdf5; default 0.1) or the "
                               "advection speed (1D_Advection_Sols_beta<β>.hdf5; default 0.4)")
    nu: float | None = Field(None, gt=0, description="PDEBench ν: Burgers viscosity (ν/π "
                             "multiplies u_xx; 1D_Burgers_Sols_Nu<ν>.hdf5; default 1.0) or the "
                             "diffusion-reaction diffusivity (ReacDiff_Nu<ν>_Rho<ρ>.hdf5; "
                             "default 0.5)")
    rho: float | None = Field(None, gt=0, description="PDEBench ρ: the diffusion-reaction "
                              "growth rate (default 1.0)")
    target_kind: Literal["auto", "dense", "classes"] = Field(
        "auto", description="task arrays: dense fields or class labels (auto: integer y is "
        "labels, floating y a field)")
    metric: str | None = Field(None, description="task arrays: rel_l2 (default), nrmse or mse "
                               "for dense targets; error_rate (default) or accuracy for classes")

    # source model
    source_model: str | None = Field(None, description="timm Swin name, e.g. "
                                     "swin_base_patch4_window7_224.ms_in22k, or a language "
                                     "model for 1D tasks (transformers), e.g. roberta-base "
                                     "(default: the embedded digits Swin)")
    weights: str | None = Field(None, description="local weights of source_model (offline "
                                "machines): for a Swin a checkpoint in timm's, Microsoft's or "
                                "Hugging Face's layout (a file, or a save_pretrained "
                                "directory), for a language model a save_pretrained directory")
    source_data: str | None = Field(None, description="digits (default), fractals "
                                    "(FractalDB-style, generated), cifar10:DIR (the CIFAR-10 "
                                    "python-pickle directory) or text:FILE (labelled text for a "
                                    "language model: .csv/.tsv/.jsonl with text and label)")
    init_embedder: str | None = Field(None, description="an embedder directory written by a "
                                      "previous run (skips stage 1)")

    # scale (check_scale): "paper" refuses the embedded inputs, so that no toy run carries a
    # paper space's name
    scale: Literal["toy", "paper"] | None = Field(
        None, description="paper: refuse to run on generated data, the embedded source model "
        "or embedded source data (the paper spaces declare it); toy or none: anything goes")

    # diagnostics and runtime
    probe_every: int = Field(0, ge=0, description="measure source_probe_error every k stage-2 "
                             "epochs (always at the end)")
    probe_samples: int = Field(400, ge=8, description="held-out source images of the linear probe "
                               "(half fit, half scored; capped by what the source data holds)")
    seed: int = Field(0, description="seed of the data order, the initialisation and the split")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, bf16 autocast, or fp16 autocast with a gradient scaler "
        "(GPUs without bfloat16)")
    bf16: bool = Field(False, description="the same as precision bf16 (files written before "
                       "precision existed)")
    grad_checkpointing: bool = Field(False, description="recompute each encoder block's "
                                     "activations in the backward pass instead of keeping "
                                     "them (both stages): less memory, about one more forward")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = half the "
                                    "cores (at least 1), so that two runs on one machine do not "
                                    "oversubscribe it (OpenMP slows down badly then)")

    @model_validator(mode="before")
    @classmethod
    def _bf16_is_a_precision(cls, data):
        """``bf16: true`` (older files) means ``precision: bf16``."""
        if isinstance(data, dict) and data.get("bf16") and "precision" not in data:
            data = {**data, "precision": "bf16"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.bf16 and self.precision != "bf16":
            raise ValueError(f"bf16 true contradicts precision {self.precision}; "
                             "set precision alone")
        if self.weights and not self.source_model:
            raise ValueError("weights needs source_model (the architecture the weights belong to)")
        if self.first_order and self.method != "mona":
            raise ValueError("first_order applies only to method 'mona'")
        if self.source_data:
            name, colon, argument = self.source_data.partition(":")
            takes = name in SOURCE_DATA_WITH_ARGUMENT
            if name not in SOURCE_DATA or (takes and not argument) or (colon and not takes):
                raise ValueError("source_data must be " + ", ".join(
                    f"'{n}:{SOURCE_DATA_WITH_ARGUMENT[n]}'" if n in SOURCE_DATA_WITH_ARGUMENT
                    else f"'{n}'"
                    for n in SOURCE_DATA))
        return self

    @property
    def stage1_epochs(self) -> int:
        """Epochs of stage 1 actually run: none for ft/scratch or with an exported embedder."""
        if self.method in ("ft", "scratch") or self.init_embedder:
            return 0
        return self.warmup_epochs


# ---------------------------------------------------------------- scale
# each real input: its field, what a run uses without it, the flag that gives it
PAPER_INPUTS: tuple[tuple[str, str, str], ...] = (
    ("data_dir", "generated data", "no --data-dir DIR"),
    ("source_model", "the embedded 0.3 M-parameter Swin", "no --source-model NAME"),
    ("source_data", "the embedded digits", "no --source-data cifar10:DIR or text:FILE"),
)


def toy_inputs(cfg: TrainConfig) -> list[str]:
    """The embedded inputs ``cfg`` would train on, each named with the flag that replaces it.
    Source data without an argument (digits, fractals) are embedded or generated; the paper's
    are read from files (``cifar10:DIR``, or ``text:FILE`` for a language model)."""
    out = []
    for name, default, flag in PAPER_INPUTS:
        value = getattr(cfg, name)
        if name == "source_data" and value:
            if value.partition(":")[0] in SOURCE_DATA_WITH_ARGUMENT:
                continue
            default = f"the embedded {value}"
            flag = f"--source-data {value}, not cifar10:DIR or text:FILE"
        elif value:
            continue
        out.append(f"{default} ({flag})")
    return out


def check_scale(cfg: TrainConfig, where: str) -> None:
    """One line (MonaError) when ``cfg`` declares ``scale: paper`` but would train on an embedded
    input, so that no toy run carries a paper space's name. ``mona-tune train`` and ``mona-tune
    search`` call it before anything loads or starts."""
    from mona_tune.errors import MonaError

    missing = toy_inputs(cfg) if cfg.scale == "paper" else []
    if missing:
        raise MonaError(f"{where} declares scale: paper, but this run would train on "
                        + ", ".join(missing))


# ---------------------------------------------------------------- search
# A search space file (``search_spaces/<task>.yaml``) is parsed into ``SearchSpace``; the command
# line gives ``SearchConfig``. Neither imports Ray: ``mona_tune.search.space`` turns them into
# Ray Tune domains, schedulers and searchers.

DISTRIBUTIONS: tuple[str, ...] = (
    "uniform", "quniform", "loguniform", "randint", "lograndint", "choice",
)


class Distribution(BaseModel):
    """One searched field: ``{uniform: [low, high]}``, ``{loguniform: [low, high]}``,
    ``{quniform: [low, high, q]}``, ``{randint: [low, high]}`` (integers, ``high`` excluded, as in
    ``ray.tune.randint``), ``{lograndint: [low, high]}`` or ``{choice: [a, b, ...]}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["uniform", "quniform", "loguniform", "randint", "lograndint", "choice"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: list | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, data):
        """Accept the file's one-key form ``{kind: args}``."""
        if not isinstance(data, dict) or "kind" in data:
            return data
        if len(data) != 1:
            raise ValueError(
                f"a distribution is one of {', '.join(DISTRIBUTIONS)} with its arguments, "
                f"e.g. {{uniform: [0, 1]}}; got keys {sorted(map(str, data))}"
            )
        ((kind, args),) = data.items()
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {kind!r} (known: {', '.join(DISTRIBUTIONS)})")
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"{kind} takes a list, e.g. {{{kind}: [low, high]}}; got {args!r}")
        if kind == "choice":
            return {"kind": kind, "values": list(args)}
        want = 3 if kind == "quniform" else 2
        if len(args) != want:
            shape = "[low, high, q]" if want == 3 else "[low, high]"
            raise ValueError(f"{kind} takes {shape}; got {list(args)!r}")
        out = {"kind": kind, "low": args[0], "high": args[1]}
        if want == 3:
            out["q"] = args[2]
        return out

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.kind} needs low and high")
        if not self.low < self.high:
            raise ValueError(f"{self.kind}: low {self.low:g} must be below high {self.high:g}")
        if self.kind in ("loguniform", "lograndint") and self.low <= 0:
            raise ValueError(f"{self.kind}: bounds must be positive on a log scale; low is {self.low:g}")
        if self.kind in ("randint", "lograndint") and not (
            float(self.low).is_integer() and float(self.high).is_integer()
        ):
            raise ValueError(f"{self.kind}: bounds must be integers; got [{self.low:g}, {self.high:g}]")
        if self.kind == "quniform" and not (self.q and self.q > 0):
            raise ValueError("quniform: q must be positive")
        return self

    def extremes(self) -> list:
        """The values at the edges of the distribution (checked against ``TrainConfig``)."""
        if self.kind == "choice":
            return list(self.values or [])
        if self.kind in ("randint", "lograndint"):
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice{self.values}"
        if self.kind in ("randint", "lograndint"):
            return f"{self.kind}[{int(self.low)}, {int(self.high)})"
        q = f", q={self.q:g}" if self.q else ""
        return f"{self.kind}[{self.low:g}, {self.high:g}{q}]"


class SearchBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(8, ge=1, description="trials to run")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this")


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, description="stage-2 epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1, description="stage-2 epochs; default: the epochs budget")


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_to_keep: int = Field(2, ge=1, description="best checkpoints kept per trial (+ the latest)")
    every: int = Field(1, ge=1, description="checkpoint every k epochs (and always the last)")


class SearchSpace(BaseModel):
    """The parsed search space file: searched and fixed ``TrainConfig`` fields plus defaults."""

    model_config = ConfigDict(extra="forbid")

    searched: dict[str, Distribution] = Field(default_factory=dict)
    fixed: dict[str, object] = Field(default_factory=dict)
    budget: SearchBudget = Field(default_factory=SearchBudget)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    description: str | None = None

    @model_validator(mode="after")
    def _fields_exist(self) -> SearchSpace:
        known = TrainConfig.model_fields
        for section, keys in (("searched", self.searched), ("fixed", self.fixed)):
            for key in keys:
                if key not in known:
                    raise ValueError(f"{section}.{key}: not a TrainConfig field")
        both = sorted(set(self.searched) & set(self.fixed))
        if both:
            raise ValueError(f"searched.{both[0]}: also fixed; a field is either searched or fixed")
        return self

    def max_stage2_epochs(self) -> int:
        """The stage-2 epoch budget of the longest trial (ASHA's max_t)."""
        if "epochs" in self.searched:
            return max(int(v) for v in self.searched["epochs"].extremes())
        return int(self.fixed.get("epochs", TrainConfig.model_fields["epochs"].default))


class SearchConfig(BaseModel):
    """How one search runs: the command-line choices around a ``SearchSpace``."""

    model_config = ConfigDict(extra="forbid")

    task: str = "darcy"
    task_name: str | None = Field(
        None, description="the name the search is tracked under (MLflow experiment mona-tune-<name>, "
        "registered model mona-<name>-embedder, best --task <name>); default: the task")
    space_file: str
    name: str
    storage: str = Field(description="Ray Tune storage path or URI (absolute)")
    tracking_uri: str
    # "search" in the settings of searches saved before the field was named for what it holds
    sampler: Literal["optuna", "random"] = Field(
        "optuna", validation_alias=AliasChoices("sampler", "search"),
        description="Optuna TPE, or seeded random sampling")
    seed: int = 0
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_failures: int = Field(2, ge=-1, description="retries of a failing trial from its latest "
                              "checkpoint (-1: forever)")
    address: str | None = None
    prepare_timeout_s: float = Field(1800.0, gt=0, description="deadline of the cache warm-up")
    dashboard: bool = False
    dashboard_port: int = Field(8265, ge=1, le=65535)
    reuse_actors: bool = True
    register_model: bool = True
    verbose: int = Field(1, ge=0, le=3)
    warm_start: str | None = Field(
        None, description="learn from past searches of the task in the tracking store: 'auto' "
        "(all of them) or a search name; None: a cold search (search/warm_start.py)")
    warm_start_first: int = Field(
        2, ge=0, description="with warm_start: the best past configurations the search runs "
        "first")

    @field_validator("task_name")
    @classmethod
    def _name_chars(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names an MLflow "
                             "experiment and a registered model)")
        return v

    @property
    def tracking_task(self) -> str:
        """The name the search is tracked under: ``task_name``, else the task."""
        return self.task_name or self.task
