"""Tasks from other packages (entry points of the group mona_tune.tasks): found, loaded once,
and a broken one named when its task is asked for."""

from __future__ import annotations

import sys

import pytest

from files import write_task_plugin
from mona_tune.errors import MonaError
from mona_tune.tasks import TASKS, get_task
from mona_tune.tasks.plugins import load_plugins
from mona_tune.tasks.registry import PLUGIN_ERRORS


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A private site folder; the plugin modules imported fresh from it (not from an earlier
    test's folder) and forgotten afterwards."""
    for module in ("ramp_task", "broken_task", "empty_task"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield tmp_path / "site"
    for name in ("ramp", "broken", "empty"):
        TASKS.pop(name, None)
        PLUGIN_ERRORS.pop(name, None)


def test_a_plugin_task_is_found_and_loads(plugin_path):
    write_task_plugin(plugin_path)
    assert "ramp" not in TASKS
    assert load_plugins() == ["ramp"]
    task = get_task("ramp")
    assert (task.in_shape, task.metric, task.output) == ((32,), "nrmse", "dense")
    data = task.load(None)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (30, 8, 10)
    assert load_plugins() == []  # once per process


def test_a_broken_plugin_is_named_and_the_others_load(plugin_path):
    write_task_plugin(plugin_path, name="broken", module="broken_task",
                      source="raise RuntimeError('needs a licence server')\n")
    write_task_plugin(plugin_path)
    assert load_plugins() == ["ramp"]
    with pytest.raises(MonaError, match=r"task 'broken': its plugin did not load: broken_task "
                                        r"\(RuntimeError: needs a licence server\)"):
        get_task("broken")


def test_a_plugin_that_registers_no_task_of_its_name_is_named(plugin_path):
    write_task_plugin(plugin_path, name="empty", module="empty_task", source="X = 1\n")
    assert load_plugins() == []
    with pytest.raises(MonaError, match=r"task 'empty': its plugin did not load: empty_task "
                                        r"\(LookupError: it registered no task named 'empty'\)"):
        get_task("empty")
