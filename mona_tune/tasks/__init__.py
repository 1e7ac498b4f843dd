"""Tasks: the registry (``registry``: what a task is, ``register``, ``get_task``), the task
modules, which register themselves when imported here, and other packages' tasks
(``plugins``: entry points of the group ``mona_tune.tasks``)."""

from mona_tune.tasks.registry import (TASKS, Task, TaskData, get_task, register, resolve_task,
                                     validation_size)

# Importing the task modules registers them.
from mona_tune.tasks import darcy as _darcy  # noqa: E402,F401,I001
from mona_tune.tasks import pdebench_1d as _pdebench_1d  # noqa: E402,F401,I001
from mona_tune.tasks import arrays as _arrays  # noqa: E402,F401,I001
from mona_tune.tasks import waveforms as _waveforms  # noqa: E402,F401,I001
from mona_tune.tasks.plugins import load_plugins  # noqa: E402,I001

load_plugins()  # other packages' tasks (entry points "mona_tune.tasks"), in every process

__all__ = ["TASKS", "Task", "TaskData", "get_task", "register", "resolve_task",
           "validation_size"]
