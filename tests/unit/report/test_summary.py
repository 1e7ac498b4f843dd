"""The summary a search prints at its end, line by line, for a search with a best trial (with
and without its optional parts), and for one without."""

from __future__ import annotations

from mona_tune.config import SearchConfig
from mona_tune.report import summary
from mona_tune.search.results import SearchOutcome

LOST_TRIAL = ("  lost trial {}: started just before the driver was interrupted, after Tune's last "
              "snapshot, and run again under another id (with the same hyperparameters, where "
              "the Optuna study held them); its MLflow run {} was deleted (restorable)")


def _print(o, uri, counts):
    scfg = SearchConfig(name="s", storage="/x", space_file="s.yaml", tracking_uri=uri)
    lines: list[str] = []
    summary.print_summary(o, scfg, "rel_l2", counts, lines.append)
    return lines


def _outcome(**kw):
    return SearchOutcome(name="s", experiment_path="/x/s", parent_run_id="parent",
                         metric="val_rel_l2", mode="min", curves_png="/x/s/curves.png", **kw)


def test_the_summary_of_a_search_with_every_part():
    lost_nodes = {
        "n2": {"ip": "10.0.0.9", "trials": {}},
        "n1": {"ip": "10.0.0.8", "trials": {
            "t7": {"now_on": None, "restored_from": None, "outcome": None},
            "t5": {"now_on": None, "restored_from": None, "outcome": "failed"},
            "t6": {"now_on": "n3", "restored_from": None, "outcome": None},
            "t4": {"now_on": "n3", "restored_from": 6, "outcome": "completed"}}}}
    o = _outcome(best_trial_id="t2", best_run_id="run2", best_config={"lam": 0.25, "opt": "adam"},
                 best_metrics={"val_rel_l2": 0.0812345, "test_rel_l2": 0.09,
                               "source_probe_error": 0.5},
                 outcomes={"t1": "failed", "t2": "completed", "t3": "diverged"},
                 details={"t3": "nan loss", "t1": "RuntimeError: boom"},
                 lost_runs={"t9": "run9", "t8": "run8"}, model_version="3",
                 timings={"total_s": 12.34, "trials_s": 10.0, "trials": 3},
                 embedder_location="/store/art", nodes={"10.0.0.2 (b)": 1, "10.0.0.1 (a)": 2},
                 lost_nodes=lost_nodes)
    lines = _print(o, "http://u:pw@host:5000", {"completed": 2, "failed": 1,
                                                "stopped_early": 1})
    assert lines == [
        "",
        "== search s done: 2 completed, 1 failed, 1 stopped early",
        "  failed t1: RuntimeError: boom",
        "  diverged t3: nan loss",
        LOST_TRIAL.format("t8", "run8"),
        LOST_TRIAL.format("t9", "run9"),
        "best trial t2: val_rel_l2 = 0.08123, test_rel_l2 = 0.09, source_probe_error = 0.5",
        "  hyperparameters: lam=0.25, opt=adam",
        "  MLflow run: run2 (parent parent)",
        "  embedder: runs:/run2/embedder  = models:/mona-darcy-embedder@best (version 3)",
        "    stored in /store/art",
        "  export it: mona-tune best --name s --tracking-uri 'http://u:***@host:5000' "
        "--export DIR",
        "trials ran on 2 nodes: 10.0.0.1 (a) (2), 10.0.0.2 (b) (1)",
        "lost node 10.0.0.8 (n1): alive when the search started, dead at its end; t4 was "
        "running there and continued on n3 from its checkpoint at global epoch 6 (completed); "
        "t5 ran there (failed); t6 was running there and continued on n3 from scratch "
        "(no outcome); t7 ran there (no outcome)",
        "lost node 10.0.0.9 (n2): alive when the search started, dead at its end; no trial ran "
        "there",
        "validation curves: /x/s/curves.png",
        "MLflow UI: open http://u:***@host:5000 (the tracking server's own UI)",
        "time: total 12.3s, trials 10.0s",  # only the durations
    ]


def test_the_summary_without_the_optional_parts():
    o = _outcome(best_trial_id="t2", best_run_id="run2", best_config={"lam": 1},
                 best_metrics={"val_rel_l2": 0.25}, nodes={"10.0.0.1 (a)": 3})
    lines = _print(o, "sqlite:////x/m b.db", {})
    assert lines == [
        "", "== search s done: ",
        "best trial t2: val_rel_l2 = 0.25, source_probe_error = n/a",
        "  hyperparameters: lam=1",
        "  MLflow run: run2 (parent parent)",
        "  embedder: runs:/run2/embedder",  # not registered
        "  export it: mona-tune best --name s --tracking-uri 'sqlite:////x/m b.db' --export DIR",
        "trials ran on 1 node: 10.0.0.1 (a) (3)",
        "validation curves: /x/s/curves.png",
        "MLflow UI: mona-tune ui --tracking-uri 'sqlite:////x/m b.db'",
        "time: "]


def test_the_summary_of_a_best_trial_without_a_run_and_of_no_best_trial():
    o = _outcome(best_trial_id="t2", best_metrics={"val_rel_l2": 0.5}, outcomes={"t1": "failed"},
                 details={"t1": "boom"}, timings={"total_s": 1.0})
    assert _print(o, "sqlite:////x/m.db", {"failed": 1})[2:7] == [
        "  failed t1: boom",
        "best trial t2: val_rel_l2 = 0.5, source_probe_error = n/a",
        "  hyperparameters: ",
        "  MLflow run: None (parent parent)",
        "validation curves: /x/s/curves.png"]  # no embedder without a run
    o.best_trial_id = None
    assert _print(o, "sqlite:////x/m.db", {"failed": 1}) == [
        "", "== search s done: 1 failed", "  failed t1: boom",
        "no trial reported a validation metric; see the errors above and /x/s",
        "validation curves: /x/s/curves.png",
        "MLflow UI: mona-tune ui --tracking-uri sqlite:////x/m.db", "time: total 1.0s"]
