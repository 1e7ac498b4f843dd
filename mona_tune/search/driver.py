"""The search driver: one search, run or resumed, from joining Ray to the printed summary.

One search = one Tune experiment ``<storage>/<name>`` + one MLflow parent run. :func:`run_search`
runs its phases in order, each a method of :class:`_Search` named for what it does: join Ray,
preflight every node, prepare the nodes' caches, open the parent run, fit the Tuner
(``search/tuner.py``), reconcile the child runs with the trials (``search/results.py``), register
the best embedder, and report (``report/``). ``mona_search.json`` in the experiment folder holds
what the driver itself needs on ``--resume`` (parent run, tracking store, settings).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from mona_tune.cluster import join, nodes, storage
from mona_tune.cluster.node_cache import prepare_nodes
from mona_tune.cluster.preflight import PreflightSpec, preflight
from mona_tune.config import SearchConfig, SearchSpace
from mona_tune.errors import MonaError
from mona_tune.report import links
from mona_tune.report.figures import plot_curves
from mona_tune.report.summary import print_summary
from mona_tune.report.trials_table import TRIALS_HTML, write_trials_report
from mona_tune.search import interrupt
from mona_tune.search.results import (
    SearchOutcome,
    lost_node_trials,
    reconcile_runs,
    trial_rows,
    trials_per_node,
)
from mona_tune.search.trial import TrialSettings
from mona_tune.search.tuner import base_searcher, build_tuner, restore_tuner, searcher_trials
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.server import check_store, local_dir

META_FILE = "mona_search.json"
CURVES_FILE = "curves.png"


# ---------------------------------------------------------------- the search's own file
def read_meta(experiment_path: str) -> dict | None:
    text = storage.read_text(storage.join(experiment_path, META_FILE))
    return json.loads(text) if text is not None else None


def write_meta(experiment_path: str, meta: dict) -> None:
    storage.write_bytes(storage.join(experiment_path, META_FILE),
                        json.dumps(meta, indent=2, default=str).encode(), make_parent=True)


def preflight_spec(scfg: SearchConfig, fixed: dict) -> PreflightSpec:
    """What every node of the cluster must see: the storage, the tracking store (a SQLite file's
    folder, a database store's local artifact root), the input files named in ``fixed``."""
    spec = PreflightSpec(storage=scfg.storage, tracking_uri=scfg.tracking_uri)
    db = mr.sqlite_path(scfg.tracking_uri)
    if db is not None:
        spec.shared_dirs.append(("the SQLite tracking store's folder", str(db.parent)))
    else:
        artifacts = local_dir(mr.planned_artifact_location(scfg.tracking_uri,
                                                           scfg.tracking_task))
        if artifacts:
            spec.shared_dirs.append(("the MLflow artifact root", artifacts))
    for key, label in (("data_dir", "--data-dir"), ("weights", "--weights")):
        if fixed.get(key):
            spec.inputs.append((label, str(fixed[key])))
    source = str(fixed.get("source_data") or "")
    if ":" in source:
        spec.inputs.append(("--source-data", source.split(":", 1)[1]))
    return spec


def check_resumable(exp_path: str) -> None:
    """One line (MonaError) when ``exp_path`` holds nothing ``--resume`` can continue."""
    from ray.tune import Tuner

    from mona_tune.search.resumable import damaged_state

    if not Tuner.can_restore(exp_path):
        raise MonaError(f"--resume: {exp_path} holds no Tune experiment state to resume")
    damaged = damaged_state(exp_path)
    if damaged:
        raise MonaError(
            f"--resume: Tune's experiment state {damaged} is cut short (the driver was "
            "killed while writing it); Tune would start the search afresh. Delete that file "
            "to resume from the one before it, if there is one, or start a new search")


def tune_environment(scfg: SearchConfig) -> None:
    """Tune's settings a search wants, unless the user set them."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # CLIReporter's live table
    # every epoch checkpoints; Tune then snapshots its state often, which resume wants
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not storage.is_uri(scfg.storage):
        # snapshot the experiment (trials, checkpoints, searcher) every few seconds, not Tune's
        # adaptive >= 10 s: a trial started after the last snapshot is lost to --resume
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")


# ---------------------------------------------------------------- the search
def run_search(scfg: SearchConfig, space: SearchSpace, param_space: dict, *, resume: bool,
               space_yaml: str, out=None) -> SearchOutcome:
    """Run (or resume) a search; prints progress and a summary; returns the outcome."""
    search = _Search(scfg, space, param_space, resume=resume, space_yaml=space_yaml, out=out)
    if resume:
        check_resumable(search.exp_path)
    # the tracking store answers, before Ray starts (seconds, not MLflow's retries)
    check_store(scfg.tracking_uri)
    search.learn_from_past()  # before Ray: a search named there that is not in the store exits
    mr.ride_out_outages()
    env = join.forwarded_env()
    tune_environment(scfg)
    try:
        search.join_ray(env)
        search.check_nodes(env)
        search.announce()
        search.prepare()
        search.open_parent_run()
        results = search.fit()
        t0 = time.time()
        rows = trial_rows(results)
        outcome = search.reconcile(rows, results)
        search.register_best(outcome)
        search.report(outcome, rows)
        search.timings["finalize_s"] = time.time() - t0
    except BaseException as err:
        search.close_failed(err)
        raise
    finally:
        mr.ride_out_outages(0.0)  # only while the search runs (tests call it in-process)
        if search.started:
            import ray

            ray.shutdown()
    return search.finish(outcome)


class _Search:
    """One search's settings and what its phases found so far (Ray, nodes, the parent run)."""

    def __init__(self, scfg: SearchConfig, space: SearchSpace, param_space: dict, *,
                 resume: bool, space_yaml: str, out=None):
        from mona_tune.config import TrainConfig
        from mona_tune.tasks import resolve_task

        self.scfg, self.space, self.param_space = scfg, space, param_space
        self.resume, self.space_yaml, self.out = resume, space_yaml, out
        self.t_start = time.time()
        self.timings: dict[str, float] = {}
        self.exp_path = storage.join(scfg.storage, scfg.name)
        self.searched = sorted(space.searched)
        self.max_t = scfg.scheduler.max_t or space.max_stage2_epochs()
        self.fixed = {k: v for k, v in param_space.items() if k not in self.searched}
        task = resolve_task(TrainConfig(**self.fixed))  # a user's arrays: metric from the data
        self.metric_name = task.metric
        self.metric, self.mode = f"val_{task.metric}", task.direction
        self.test_key = f"test_{task.metric}"
        self.started = False
        self.nodes: list[nodes.Node] = []
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.tuner = None
        self.counts: dict[str, int] = {}
        self.warm = None  # search/warm_start.py: what a warm-started search learnt
        self.provenance: dict = {}  # what the trials train on (data, source model, source data)

    def say(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    # -- the past searches of the task, where --warm-start asks (a resumed search has its study)
    def learn_from_past(self) -> None:
        if not self.scfg.warm_start or self.resume:
            return
        from mona_tune.search.warm_start import learn_from_store

        self.warm = learn_from_store(self.scfg, self.space, self.fixed, metric=self.metric,
                                     mode=self.mode)
        self.say(self.warm.describe(mr.redact(self.scfg.tracking_uri)))

    # -- Ray, and every node checked before anything is written
    def join_ray(self, env: dict) -> None:
        scfg = self.scfg
        t0 = time.time()
        self.started, url = join.join(scfg.address, dashboard=scfg.dashboard,
                                      dashboard_port=scfg.dashboard_port, env=env)
        self.timings["ray_start_s"] = time.time() - t0
        if scfg.dashboard:
            self.say(join.dashboard_help(url))

    def check_nodes(self, env: dict) -> None:
        scfg = self.scfg
        t0 = time.time()
        self.nodes = nodes.alive_nodes()
        for warning in preflight(preflight_spec(scfg, self.fixed), self.nodes):
            self.say(warning)
        self.timings["preflight_s"] = time.time() - t0
        n = self.nodes
        if len(n) > 1 or scfg.address or os.environ.get("RAY_ADDRESS"):
            self.say(f"Ray cluster: {len(n)} node{'s' if len(n) != 1 else ''} ("
                     + ", ".join(f"{x.ip} {x.cpus:g} CPU {x.gpus:g} GPU" for x in n) + ")"
                     + (f"; forwarded to the trials: {', '.join(sorted(env))}"
                        if env and self.started else ""))

    def announce(self) -> None:
        scfg = self.scfg
        self.say(f"search {scfg.name}: task {scfg.task}, {scfg.num_samples} trials "
                 f"({scfg.max_concurrent} at a time), {scfg.sampler} search, "
                 f"{scfg.scheduler.kind} scheduler (max_t {self.max_t} stage-2 epochs), "
                 f"metric {self.metric} ({self.mode})")
        self.say(f"  space {scfg.space_file}; searched: "
                 + ", ".join(f"{k} ~ {self.space.searched[k].describe()}" for k in self.searched))
        self.say(f"  storage {self.exp_path}")

    # -- data and source model into every node's cache, once
    def prepare(self) -> None:
        from mona_tune.train.provenance import provenance_lines

        scfg = self.scfg
        t0 = time.time()
        prep = prepare_nodes(self.fixed, self.nodes, scfg.cpus_per_trial, scfg.gpus_per_trial,
                             timeout=scfg.prepare_timeout_s)
        self.timings["prepare_s"] = time.time() - t0
        self.provenance = prep.pop("provenance", {})
        for line in provenance_lines(self.provenance) if self.provenance else ():
            self.say(f"  {line}")
        for k, v in prep.items():
            if k.endswith("_s"):
                self.timings[f"prepare_{k}"] = float(v)
        if prep["nodes"] > 1:
            self.say(f"  data and source model prepared on {prep['prepared_on']}; "
                     f"{prep['cache_bytes'] / 1e6:.1f} MB of cache copied to "
                     f"{prep.get('nodes_filled', 0)} of the {prep['nodes'] - 1} other nodes "
                     "(the others had it)")

    # -- the MLflow parent run (a new one, or the interrupted search's reopened)
    def open_parent_run(self) -> None:
        scfg = self.scfg
        meta = read_meta(self.exp_path) if self.resume else None
        t0 = time.time()
        self.experiment_id = mr.ensure_experiment(scfg.tracking_uri, scfg.tracking_task)
        if meta is not None:
            try:
                mr.reopen_run(scfg.tracking_uri, meta["parent_run_id"])
            except Exception as e:  # MlflowException: RESOURCE_DOES_NOT_EXIST
                raise MonaError(
                    f"--resume: the search's parent run {meta['parent_run_id']} is not in the "
                    f"tracking store {mr.redact(scfg.tracking_uri)} ({type(e).__name__}); pass "
                    "--tracking-uri with the store the search started in") from None
            self.parent_run_id = meta["parent_run_id"]
        else:
            self.parent_run_id = mr.start_parent_run(
                scfg.tracking_uri, self.experiment_id, name=scfg.name, task=scfg.tracking_task,
                params=self._parent_params(), space_yaml=self.space_yaml)
        self.timings["mlflow_setup_s"] = time.time() - t0
        self.settings = self._trial_settings()
        if meta is None:
            write_meta(self.exp_path, {
                "search_config": scfg.model_dump(mode="json"), "space_yaml": self.space_yaml,
                "param_space_fixed": self.fixed, "parent_run_id": self.parent_run_id,
                "experiment_id": self.experiment_id, "settings": asdict(self.settings),
                "created": time.time()})
        self.say(f"  MLflow {mr.redact(scfg.tracking_uri)}: parent run {self.parent_run_id}")

    def _parent_params(self) -> dict:
        scfg = self.scfg
        params = {"task": scfg.task, "sampler": scfg.sampler, "scheduler": scfg.scheduler.kind,
                  "grace_period": scfg.scheduler.grace_period,
                  "reduction_factor": scfg.scheduler.reduction_factor, "max_t": self.max_t,
                  "seed": scfg.seed, "num_samples": scfg.num_samples,
                  "max_concurrent": scfg.max_concurrent, "cpus_per_trial": scfg.cpus_per_trial,
                  "gpus_per_trial": scfg.gpus_per_trial, "max_failures": scfg.max_failures,
                  "space_file": scfg.space_file, "searched": ",".join(self.searched),
                  "storage": self.exp_path, "metric": self.metric, "mode": self.mode,
                  "ray_nodes": len(self.nodes)}
        params.update({f"fixed.{k}": v for k, v in self.fixed.items()})
        params.update(self.provenance)
        if self.warm is not None:
            params.update(self.warm.params())
        return params

    def _trial_settings(self) -> TrialSettings:
        scfg = self.scfg
        local = not storage.is_uri(scfg.storage)
        return TrialSettings(
            tracking_uri=scfg.tracking_uri, experiment_id=self.experiment_id,
            parent_run_id=self.parent_run_id, search_name=scfg.name, task=scfg.tracking_task,
            metric=self.metric_name, mode=self.mode, cpus_per_trial=scfg.cpus_per_trial,
            gpus_per_trial=scfg.gpus_per_trial, checkpoint_every=scfg.checkpoint.every,
            searched=tuple(self.searched),
            keep_checkpoints=scfg.checkpoint.num_to_keep if local else None,
            experiment_path=str(self.exp_path) if local else "",
        )

    # -- the Tuner, until every trial ended (or a signal, or a full storage, stopped it)
    def fit(self):
        scfg = self.scfg
        if self.resume:
            self.tuner = restore_tuner(self.exp_path, self.settings, scfg)
        else:
            self.tuner = build_tuner(scfg, self.param_space, self.settings, max_t=self.max_t,
                                     metric=self.metric, mode=self.mode, searched=self.searched,
                                     warm=self.warm)
        self.searcher_name = type(base_searcher(self.tuner)).__name__
        if self.resume:
            self.say(f"resuming {self.exp_path} (searcher {self.searcher_name}; its state is "
                     "restored from the experiment directory)")
        t0 = time.time()
        # SIGINT/SIGTERM: the trials stop, Tune saves its state, SearchInterrupted names the resume
        resume_cmd = interrupt.resume_command(scfg.name, scfg.storage, scfg.address)
        results = None
        try:
            with interrupt.storage_watch(None if storage.is_uri(self.exp_path) else
                                         self.exp_path), interrupt.graceful_stop(resume_cmd):
                results = self.tuner.fit()
        except Exception:  # reading the results back from a full storage may fail too
            if interrupt.storage_full() is None:
                raise
        full = interrupt.storage_full()
        if full:
            raise MonaError(f"the storage {self.exp_path} is full: {full[0]} ({full[1]}); the "
                            f"search stopped. Free space there, then continue with: {resume_cmd}")
        self.timings["trials_s"] = time.time() - t0
        self.n_study = searcher_trials(self.tuner)
        if self.resume and self.n_study is not None:
            if self.n_study >= len(results):
                self.say(f"{self.searcher_name}: the study holds {self.n_study} trials, those "
                         "before the interruption included")
            else:
                self.say(f"warning: {self.searcher_name}'s study holds {self.n_study} of the "
                         f"{len(results)} trials: its state was not restored from the "
                         "experiment directory")
        return results

    # -- outcomes of every trial on its run, the best trial
    def reconcile(self, rows: list[dict], results) -> SearchOutcome:
        scfg = self.scfg
        stopped_by = "ASHA" if scfg.scheduler.kind == "asha" else "the time budget"
        lost: dict[str, str] = {}
        self.recon = reconcile_runs(scfg.tracking_uri, self.experiment_id, self.parent_run_id,
                                    rows, self.test_key, self.max_t, stopped_by, lost)
        outcome = SearchOutcome(
            name=scfg.name, experiment_path=self.exp_path, parent_run_id=self.parent_run_id,
            metric=self.metric, mode=self.mode,
            outcomes={k: v[0] for k, v in self.recon.items()},
            details={k: v[1] for k, v in self.recon.items() if v[0] in ("failed", "diverged")},
            lost_runs=lost, searcher=self.searcher_name, searcher_trials=self.n_study)
        try:
            best = results.get_best_result(metric=self.metric, mode=self.mode, scope="last",
                                           filter_nan_and_inf=True)
        except Exception:  # no trial reported the metric
            best = None
        if best is not None and best.metrics:
            best_trial = best.metrics.get("trial_id")
            outcome.best_trial_id = best_trial
            outcome.best_config = {k: best.config.get(k) for k in self.searched}
            outcome.best_metrics = {k: v for k, v in best.metrics.items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
            outcome.best_run_id = self.recon.get(best_trial, (None, None, None))[2] \
                or best.metrics.get("mlflow_run_id")
        return outcome

    # -- the best trial marked, its metrics on the parent run, its embedder registered
    def register_best(self, outcome: SearchOutcome) -> None:
        scfg, uri = self.scfg, self.scfg.tracking_uri
        if outcome.best_run_id:
            mr.set_tags(uri, self.parent_run_id, {
                mr.TAG_BEST_RUN: outcome.best_run_id, "mona.best_trial_id": outcome.best_trial_id})
            mr.set_tags(uri, outcome.best_run_id, {"mona.best": "true"})
            best_m = {f"best_{self.metric}": outcome.best_metrics.get(self.metric)}
            for k in (self.test_key, "source_probe_error", "source_probe_error_pretrained"):
                if k in outcome.best_metrics:
                    best_m[f"best_{k}"] = outcome.best_metrics[k]
            mr.log_metrics(uri, self.parent_run_id,
                           {k: v for k, v in best_m.items() if v is not None}, step=0)
            try:
                outcome.embedder_location = mr.embedder_location(uri, outcome.best_run_id)
            except Exception:  # informational only
                outcome.embedder_location = None
            if scfg.register_model:
                try:
                    mv = mr.register_embedder(
                        uri, scfg.tracking_task, outcome.best_run_id,
                        tags={"search": scfg.name, "trial_id": outcome.best_trial_id,
                              self.metric: outcome.best_metrics.get(self.metric)})
                    outcome.model_version = str(mv.version)
                except Exception as e:  # e.g. no embedder logged (trial without stage 1)
                    self.say(f"note: could not register the best embedder: {e}")
        self.counts = {o: sum(1 for v in outcome.outcomes.values() if v == o)
                       for o in mr.OUTCOMES}
        outcome.nodes = trials_per_node(uri, self.experiment_id, self.parent_run_id)
        lost_nodes = nodes.lost_nodes(self.nodes)  # alive at the start (preflight), dead now
        if lost_nodes:
            outcome.lost_nodes = lost_node_trials(uri, self.experiment_id, self.parent_run_id,
                                                  lost_nodes)
            mr.set_tags(uri, self.parent_run_id, {"mona.lost_nodes": ", ".join(
                f"{n.ip} ({n.node_id})" for n in lost_nodes)})
        mr.log_metrics(uri, self.parent_run_id,
                       {f"trials_{k}": v for k, v in self.counts.items()}, step=0)

    # -- the curves, the trials side by side, the MLflow UI view
    def report(self, outcome: SearchOutcome, rows: list[dict]) -> None:
        scfg, uri = self.scfg, self.scfg.tracking_uri
        title = f"{scfg.name}: {scfg.task}"
        with tempfile.TemporaryDirectory() as d:
            png = plot_curves(rows, self.metric, self.recon, outcome.best_trial_id,
                              Path(d) / CURVES_FILE, title=title)
            mr.log_artifact(uri, self.parent_run_id, png)
            target = storage.join(self.exp_path, CURVES_FILE)
            storage.write_bytes(target, png.read_bytes())
            outcome.curves_png = target
            self._report_incumbent(Path(d), title)
            for f in write_trials_report(rows, Path(d), metric=self.metric, mode=self.mode,
                                         searched=self.searched, outcomes=self.recon,
                                         best_trial=outcome.best_trial_id, title=title,
                                         test_key=self.test_key, tracking_uri=uri,
                                         experiment_id=self.experiment_id):
                mr.log_artifact(uri, self.parent_run_id, f)
                storage.write_bytes(storage.join(self.exp_path, f.name), f.read_bytes())
        key, state = links.trials_view_state(scfg.name, self.searched, self.metric,
                                             self.test_key)
        stored = mr.store_shared_view(uri, self.experiment_id, links.SHARED_VIEW_TAG + key, state)
        self.say(f"  trials side by side: {storage.join(self.exp_path, TRIALS_HTML)}; in the "
                 "MLflow UI: " + links.trials_view_url(uri, self.experiment_id,
                                                       key if stored else None))

    def _report_incumbent(self, folder: Path, title: str) -> None:
        """The incumbent over time: a history on the parent run, ``incumbent.png`` there and
        beside ``curves.png``, one line."""
        from mona_tune.report.incumbent import INCUMBENT_FILE, plot_incumbents
        from mona_tune.tracking.incumbent import incumbent_curve, log_incumbent, search_reports

        uri = self.scfg.tracking_uri
        curve = incumbent_curve(search_reports(uri, self.experiment_id, self.parent_run_id,
                                               self.metric), self.mode, search=self.scfg.name)
        log_incumbent(uri, self.parent_run_id, curve, self.metric)
        png = plot_incumbents([curve], self.metric, folder / INCUMBENT_FILE, title=title)
        mr.log_artifact(uri, self.parent_run_id, png)
        target = storage.join(self.exp_path, INCUMBENT_FILE)
        storage.write_bytes(target, png.read_bytes())
        self.say(f"  incumbent: {curve.describe()}; {target}")

    # -- the end
    def close_failed(self, err: BaseException) -> None:
        """The parent run, where one was started, ends FAILED (KILLED on an interrupt) and names
        the error."""
        if self.parent_run_id is None:  # nothing was started in the tracking store
            return
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        try:
            mr.set_tags(self.scfg.tracking_uri, self.parent_run_id,
                        {"mona.error": f"{type(err).__name__}: {err}".splitlines()[0][:500]})
            mr.end_run(self.scfg.tracking_uri, self.parent_run_id, status)
        except Exception:  # the original error matters more
            import logging

            logging.getLogger(__name__).debug("could not close the parent run", exc_info=True)

    def finish(self, outcome: SearchOutcome) -> SearchOutcome:
        self.timings["total_s"] = time.time() - self.t_start
        outcome.timings = self.timings
        mr.log_metrics(self.scfg.tracking_uri, self.parent_run_id,
                       {f"timing_{k}": v for k, v in self.timings.items()}, step=0)
        mr.end_run(self.scfg.tracking_uri, self.parent_run_id, "FINISHED")
        print_summary(outcome, self.scfg, self.metric_name, self.counts, self.say)
        return outcome
