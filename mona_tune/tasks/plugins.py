"""Tasks from other packages: the entry points of the group ``mona_tune.tasks``.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."mona_tune.tasks"]
    ramp = "my_tasks.ramp"            # a module whose import registers its tasks
    # or "my_tasks.ramp:TASK" (a Task) or "my_tasks.ramp:make_task" (returns one)

They are read where the registry is built (``import mona_tune.tasks``), so the driver and every
trial process on every node find the same tasks, provided the package is installed on each node.
A plugin that fails to load is skipped and named when its task is asked for.
"""

from __future__ import annotations

from types import ModuleType

from mona_tune.tasks.registry import PLUGIN_ERRORS, TASKS, Task, register

GROUP = "mona_tune.tasks"


def load_plugins() -> list[str]:
    """Load the entry points not loaded yet; returns the names of those loaded now."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=GROUP):
        if ep.name in TASKS or ep.name in PLUGIN_ERRORS:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, (ModuleType, Task, type)):
                obj = obj()
            if isinstance(obj, Task) and obj.name not in TASKS:
                register(obj)
            if ep.name not in TASKS:
                raise LookupError(f"it registered no task named {ep.name!r}")
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the others
            PLUGIN_ERRORS[ep.name] = f"{ep.value} ({type(e).__name__}: {e})"
            continue
        loaded.append(ep.name)
    return loaded
