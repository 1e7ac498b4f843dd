"""A task from another package, searched on a local Ray cluster: the driver and the trial
processes (fresh Ray workers) each find it through its entry point, as on every node where the
package is installed."""

from __future__ import annotations

import os
import sys

import pytest
from files import write_task_plugin
from services import local_ray

from mona_tune.cli import main
from mona_tune.tasks import TASKS
from mona_tune.tasks.plugins import load_plugins
from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_cluster(tmp_path_factory):
    """The plugin 'installed' into a private folder on the path of this process and of the
    cluster's workers (PYTHONPATH, set before Ray starts them)."""
    site = write_task_plugin(tmp_path_factory.mktemp("site"))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), before) if p)
    sys.path.insert(0, str(site))
    try:
        assert load_plugins() == ["ramp"]
        with local_ray(tmp_path_factory.mktemp("faults") / "faults.json") as address:
            yield address
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("ramp_task", None)
        TASKS.pop("ramp", None)
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def test_search_a_plugin_task(plugin_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["search", "--task", "ramp", "--name", "plug", "--storage", str(tmp_path / "runs"),
            "--tracking-uri", uri, "--num-samples", "2", "--max-t", "1", "--set", "epochs=1",
            "--set", "device=cpu", "--sampler", "random", "--quiet"]
    assert main(argv) == 2  # no packaged space for a plugin's task: one line
    assert "task 'ramp' has no packaged search space; pass --space FILE" in capsys.readouterr().err
    code = main([*argv, "--space", "arrays"])
    out, err = capsys.readouterr()
    assert code == 0, (out + err)[-3000:]
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-ramp")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`mona.role` = 'trial'")
    assert len(runs) == 2
    assert all(r.data.tags["mona.outcome"] == "completed" for r in runs)
    assert all(0 < r.data.metrics["test_nrmse"] < 10 for r in runs)
