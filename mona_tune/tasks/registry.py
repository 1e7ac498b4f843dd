"""The task registry: what a task is, in one place (``mona_tune.tasks`` re-exports it).

A task declares its input (channels, spatial shape), its output (a dense field of ``out_channels``
channels or ``out_channels`` classes), its training loss and its metric (name and direction), and a
loader. The trainer knows tasks only through this interface, so adding a task (or a 1D task, whose
``in_shape`` has one entry) never touches the trainer.

Conventions shared by every loader:
- inputs ``x_*`` are normalised float32 tensors ``(N, C, *in_shape)``;
- targets ``y_*`` are in physical units (dense: float32 ``(N, out_channels, *out_shape)``;
  classification: int64 ``(N,)``);
- the model predicts in normalised units; ``TaskData.decode`` maps a prediction to physical units
  before the loss and the metric (identity for classification).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from torch import Tensor

from mona_tune.errors import MonaError

if TYPE_CHECKING:
    from mona_tune.config import TrainConfig


@dataclass(frozen=True)
class TaskData:
    """Tensors of one task, split and normalised, ready for training."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    decode: Callable[[Tensor], Tensor]
    info: dict = field(default_factory=dict)  # files read, counts, resolution: logged as params
    # the data files read, by the split they hold ("all": one file of every split); their
    # sizes and hashes are the run's provenance (train/provenance.py)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[2:])

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.y_train.shape[2:])


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    in_channels: int
    in_shape: tuple[int, ...]  # default spatial shape of an input, e.g. (85, 85)
    output: Literal["dense", "classes"]
    out_channels: int  # dense: channels of the predicted field; classes: number of classes K
    metric: str  # e.g. "rel_l2"; reported as val_<metric> / test_<metric>
    direction: Literal["min", "max"]
    loss: Callable[[Tensor, Tensor], Tensor]  # (decoded pred, target) -> scalar training loss
    metric_per_sample: Callable[[Tensor, Tensor], Tensor]  # (decoded pred, target) -> (N,) values
    load: Callable[[TrainConfig], TaskData]
    # a task whose shapes, output kind and metric come from its data (``arrays``): the Task
    # for one config, read from the data's headers; None for a task fixed by its definition
    configure: Callable[[TrainConfig], Task] | None = None
    # which of the task-specific fields (TASK_FIELDS) its loader reads; None: not declared (a
    # plugin's task), nothing checked
    fields: frozenset[str] | None = None

    @property
    def mode(self) -> Literal["min", "max"]:
        return self.direction


# TrainConfig fields that only some tasks read: naming one for another task is a mistake
TASK_FIELDS = frozenset({"resolution", "beta", "nu", "rho", "target_kind", "metric"})


def check_fields(task: Task, given, where: str) -> None:
    """One line when ``given`` (field names a user set) holds a task-specific field the task
    does not read (``nu`` for Darcy, ``metric`` for a PDE task)."""
    if task.fields is None:
        return
    unused = sorted((set(given) & TASK_FIELDS) - task.fields)
    if unused:
        reads = ", ".join(sorted(task.fields)) or "none of them"
        raise MonaError(f"{where}: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} "
                        f"not used by task {task.name} (of {', '.join(sorted(TASK_FIELDS))} "
                        f"it reads {reads})")


def validation_size(n_train: int, val_fraction: float) -> int:
    """Validation samples held out of ``n_train``: ``round(n_train · val_fraction)``, at least 1."""
    return max(1, int(round(n_train * val_fraction)))


TASKS: dict[str, Task] = {}
PLUGIN_ERRORS: dict[str, str] = {}  # entry point name -> why it did not load (tasks.plugins)


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    TASKS[task.name] = task
    return task


def resolve_task(cfg: TrainConfig) -> Task:
    """The task of ``cfg`` as a run sees it: its definition, or what its data configure."""
    task = get_task(cfg.task)
    return task.configure(cfg) if task.configure else task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        if name in PLUGIN_ERRORS:
            raise MonaError(f"task {name!r}: its plugin did not load: "
                            f"{PLUGIN_ERRORS[name]}") from None
        raise MonaError(f"unknown task {name!r} (known tasks: {known})") from None

