"""What a finished search left in its MLflow store, read back for the system tests."""

from __future__ import annotations

from mona_tune.tracking import mlflow_runs as mr


def search_runs(uri: str, search: str, task: str = "darcy") -> tuple[list, dict[str, list]]:
    """The search's parent runs, and its trial runs by Ray trial id (several if a trial was
    tracked more than once)."""
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name(f"mona-tune-{task}")
    if exp is None:
        return [], {}
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mona.search_name` = '{search}'")
    trials: dict[str, list] = {}
    for r in runs:
        if r.data.tags.get("mona.role") == "trial":
            trials.setdefault(r.data.tags["ray_trial_id"], []).append(r)
    return [r for r in runs if r.data.tags.get("mona.role") == "search"], trials


def tracked_once(uri: str, search: str, n_trials: int) -> dict[str, object]:
    """Checks that each of the ``n_trials`` trials has exactly one run, completed, its epochs
    logged once each; its run by trial id."""
    _, trials = search_runs(uri, search)
    assert len(trials) == n_trials and all(len(v) == 1 for v in trials.values()), trials
    client = mr.get_client(uri)
    for (run,) in trials.values():
        assert run.data.tags["mona.outcome"] == "completed", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "global_epoch")]
        assert steps == sorted(set(steps)), f"epochs logged twice: {steps}"
    return {t: runs[0] for t, runs in trials.items()}
