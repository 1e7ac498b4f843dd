"""Tasks: the registry (``registry``: what a task is, ``register``, ``get_task``) and the task
modules, which register themselves when imported here."""

from mona_tune.tasks.registry import TASKS, Task, TaskData, get_task, register

# Importing the task modules registers them.
from mona_tune.tasks import darcy as _darcy  # noqa: E402,F401,I001

__all__ = ["TASKS", "Task", "TaskData", "get_task", "register"]
