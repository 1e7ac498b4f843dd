"""The peer, side by side in one run: ``mona-tune search`` against the same search written by hand
with Ray Tune's own API.

Both paths run the same trainer (``Trainer(TrainConfig(**config))``), the same space (the embedded
Darcy default, ``search_spaces/darcy.yaml``, at a reduced ``n_train``), the same number of trials,
the same seeded Optuna TPE sampler behind a ``ConcurrencyLimiter`` and the same ASHA scheduler
(``stage2_epoch``, grace period, reduction factor and max_t of the space file), two trials at a
time with one CPU each, each on a fresh local Ray started the same way, on warm caches:

- library: :func:`mona_tune.search.plan.plan_search` + :func:`mona_tune.search.driver.run_search`,
  as ``mona-tune search --task darcy --set n_train=N`` runs it (parent run, child runs, embedders,
  the best embedder registered, curves and trials table);
- hand-written (:func:`hand_tuner`): a function trainable that builds the trainer and reports
  every epoch's metrics to Tune with a checkpoint (the last epoch after ``fit()`` with the final
  metrics, else ASHA stops the trial at max_t before its test metric exists), ``tune.Tuner`` with
  ``ASHAScheduler``, ``OptunaSearch``, ``ConcurrencyLimiter`` and ``MLflowLoggerCallback``
  (``save_artifact=True``) into its own SQLite store, Tune's defaults elsewhere (no actor reuse).

Per path: wall time of the whole search (from the request to the result, Ray's start excluded and
shown apart), of the trials phase (``Tuner.fit``), the trainers' own training seconds (a completed
trial: its final ``seconds`` less its per-epoch callbacks; a trial ASHA stopped: the sum of its
epochs' ``epoch_seconds``; ``seconds`` include the pretrained encoder's probe error, computed once
per process), the ideal (that sum / 2 slots), the fixed cost per trial
((trials wall x 2 - training) / trials) and, where a worker process ran several trials, the fixed
cost per trial after the worker's first (each trial's end taken from the end of its MLflow run),
the slot left idle at the end (no trial left to start; part of the fixed cost), and what each
path recorded in MLflow (counted with the MlflowClient).

    python benchmarks/peer_search.py [--n-train 1600] [--num-samples 8] [--repeats 1]

``--repeats 2`` runs library, hand, hand, library (order effects cancel in the means). The last
line is the headline; ``overhead_vs_hand_written`` (``..._reusing_actors`` with
``--hand-reuse-actors``), ``overhead_vs_ideal_20s`` and ``fixed_cost_per_trial_s`` go into
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # results_json
OUT = ROOT / "benchmarks" / "out" / "peer_search"

TASK = "darcy"
METRIC, MODE = "val_rel_l2", "min"
SEED = 0
CONCURRENCY = 2
NUM_SAMPLES = 8
# the goal's ~20 s trials: at 1600 samples (the default space has 1000) 8 trials trained
# 150 s on a quiet 2-core machine, 18.8 s each; at 400, ~5 s each
N_TRAIN = 1600
HAND_EXPERIMENT = "darcy-hand-written"

# What a user copies by hand from search_spaces/darcy.yaml (its searched and fixed fields, its
# scheduler and checkpoint sections); tests/unit/test_peer_search_config.py checks it against the
# library's plan of the same request.
HAND_FIXED = {"task": TASK, "method": "mona", "epochs": 6, "batch_size": 16,
              "num_threads": 1}  # the library's trials set torch's threads to their CPUs
HAND_ASHA = {"time_attr": "stage2_epoch", "max_t": 6, "grace_period": 1, "reduction_factor": 2}
HAND_KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------- the two configurations
def library_request(out: Path, name: str, *, n_train: int = N_TRAIN,
                    num_samples: int = NUM_SAMPLES):
    """``mona-tune search --task darcy --set n_train=N --num-samples K --max-concurrent 2
    --seed 0 --quiet`` as a :class:`SearchRequest`."""
    from mona_tune.search.plan import SearchRequest

    return SearchRequest(task=TASK, name=name, storage=str(out / "library" / "runs"),
                         tracking_uri=f"sqlite:///{out / 'library' / 'mlflow.db'}", seed=SEED,
                         num_samples=num_samples, max_concurrent=CONCURRENCY,
                         fixed={"n_train": n_train}, cpus_per_trial=1.0, quiet=True)


def hand_param_space(n_train: int = N_TRAIN) -> dict:
    from ray import tune

    return {
        "lam": tune.uniform(0.0, 1.0),
        "inner_lr": tune.loguniform(1e-2, 1.0),
        "warmup_epochs": tune.randint(0, 3),
        "lr": tune.loguniform(1e-3, 1e-2),
        **HAND_FIXED, "n_train": n_train,
    }


def hand_searcher(num_samples: int = NUM_SAMPLES):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    # the same TPE as the library's (seed, and a model after a third of the trials rather than
    # Optuna's 10 random ones): the same seeded trials
    sampler = optuna.samplers.TPESampler(seed=SEED, n_startup_trials=max(2, num_samples // 3))
    return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=CONCURRENCY)


def hand_tuner(out: Path, name: str, *, n_train: int = N_TRAIN, num_samples: int = NUM_SAMPLES,
               reuse_actors: bool = False):
    """The search a user writes by hand with Ray Tune's API (built, not run)."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    mlflow_cb = MLflowLoggerCallback(tracking_uri=f"sqlite:///{out / 'hand' / 'mlflow.db'}",
                                     experiment_name=HAND_EXPERIMENT, save_artifact=True)
    return tune.Tuner(
        tune.with_resources(hand_trainable, {"cpu": 1}),
        param_space=hand_param_space(n_train),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=num_samples,
                                    search_alg=hand_searcher(num_samples),
                                    scheduler=ASHAScheduler(**HAND_ASHA),
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=str(out / "hand" / "runs"), callbacks=[mlflow_cb],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=HAND_KEEP_CHECKPOINTS,
                                                    checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order=MODE),
            verbose=0))


def hand_trainable(config: dict) -> None:
    """One trial: the trainer, each epoch reported with its checkpoint; ``callback_s`` (the time
    in the per-epoch callback, which the trainer's ``seconds`` include) is for this benchmark."""
    import shutil
    import tempfile

    from ray import tune

    from mona_tune.config import TrainConfig
    from mona_tune.train.trainer import Trainer

    cfg = TrainConfig(**config)
    spent = {"callback_s": 0.0}
    last: dict = {}

    def report(trainer, metrics: dict) -> None:
        d = tempfile.mkdtemp(prefix="hand-ckpt-")
        try:
            trainer.save_checkpoint(Path(d) / "trainer")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def on_epoch(trainer, metrics: dict) -> None:
        t0 = time.perf_counter()
        try:
            if metrics["stage"] == 2 and metrics["stage2_epoch"] >= cfg.epochs:
                last.update(metrics)  # reported after fit(), with the test metric
            else:
                report(trainer, metrics)
        finally:
            spent["callback_s"] += time.perf_counter() - t0

    trainer = Trainer(cfg, callback=on_epoch)
    final = trainer.fit()
    numbers = {k: v for k, v in final.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    report(trainer, {**last, **numbers, **spent})


def asha_settings(scheduler) -> dict:
    """What an ASHA scheduler was built with (its rungs carry the grace period)."""
    rungs = [m for m, _ in scheduler._brackets[0]._rungs]
    return {"time_attr": scheduler._time_attr, "max_t": scheduler._max_t,
            "reduction_factor": scheduler._reduction_factor, "grace_period": min(rungs),
            "rungs": sorted(rungs), "brackets": len(scheduler._brackets)}


def optuna_settings(search_alg) -> dict:
    """The Optuna searcher under its wrappers: its sampler (kind, startup trials, first draw of
    its seed) and the concurrency limit."""
    import optuna

    limit, alg = None, search_alg
    while hasattr(alg, "searcher"):
        limit = getattr(alg, "max_concurrent", limit)
        alg = alg.searcher
    sampler = alg._sampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)  # consumes a draw: call on a tuner not run
    first = study.ask().suggest_float("x", 0.0, 1.0)
    from ray.tune.search.optuna import OptunaSearch

    return {"optuna": isinstance(alg, OptunaSearch), "sampler": type(sampler).__name__,
            "n_startup_trials": sampler._n_startup_trials, "first_draw": first,
            "max_concurrent": limit}


def domain_settings(value):
    """A param-space entry as comparable data (a Tune domain: kind, bounds, sampler)."""
    from ray.tune.search.sample import Domain

    if not isinstance(value, Domain):
        return value
    return (type(value).__name__, value.lower, value.upper, type(value.get_sampler()).__name__)


def tuner_settings(tuner) -> dict:
    """Everything of a built Tuner that the two paths must share."""
    from mona_tune import ray_compat

    internal = tuner._local_tuner
    tc, rc = internal._tune_config, internal._run_config
    return {"metric": tc.metric, "mode": tc.mode, "num_samples": tc.num_samples,
            "scheduler": asha_settings(tc.scheduler),
            "searcher": optuna_settings(ray_compat.tuner_search_alg(tuner)),
            "param_space": {k: domain_settings(v) for k, v in internal._param_space.items()},
            "num_to_keep": rc.checkpoint_config.num_to_keep}


def library_settings(plan) -> dict:
    """:func:`tuner_settings` of the Tuner ``run_search`` builds for ``plan`` (built, not run),
    with what its trials do themselves: set ``num_threads`` to their CPUs, and keep their
    checkpoints on local storage (``TrialSettings.keep_checkpoints``, Tune's own retention off)."""
    from mona_tune.search.trial import TrialSettings
    from mona_tune.search.tuner import build_tuner

    scfg = plan.scfg
    settings = TrialSettings(tracking_uri=scfg.tracking_uri, experiment_id="0",
                             parent_run_id="0", search_name=scfg.name, task=scfg.task,
                             metric="rel_l2", cpus_per_trial=scfg.cpus_per_trial,
                             keep_checkpoints=scfg.checkpoint.num_to_keep)
    tuner = build_tuner(scfg, plan.param_space, settings,
                        max_t=scfg.scheduler.max_t or plan.space.max_stage2_epochs(),
                        metric=METRIC, mode=MODE, searched=sorted(plan.space.searched))
    out = tuner_settings(tuner)
    out["param_space"]["num_threads"] = int(round(scfg.cpus_per_trial))
    out["num_to_keep"] = out["num_to_keep"] or settings.keep_checkpoints
    return out


# ----------------------------------------------------------------- measuring one search
def trial_rows(experiment_dir: Path, ends: dict[str, float]) -> dict[str, dict]:
    """Every trial's reported results (its ``result.json``), its worker process and when it
    ended (``ends``: from its MLflow run; Tune rewrites every ``result.json`` at the end of the
    search and stamps results to the second)."""
    out = {}
    for f in sorted(experiment_dir.glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            tid = rows[-1]["trial_id"]
            out[tid] = {"rows": rows, "pid": rows[-1]["pid"], "end": ends.get(tid)}
    return out


def run_ends(uri: str, runs) -> dict[str, float]:
    """Trial id -> the end of its MLflow run (seconds): the library's child runs carry the id in
    a tag, MLflowLoggerCallback's runs in their name (``<trainable>_<trial id>``)."""
    from mona_tune.tracking import mlflow_runs as mr

    out = {}
    for r in runs:
        tid = r.data.tags.get(mr.TAG_TRIAL_ID) or (r.info.run_name or "").rsplit("_", 1)[-1]
        if r.info.end_time:
            out[tid] = r.info.end_time / 1000
    return out


def training_seconds(rows: list[dict]) -> tuple[float, bool]:
    """(the trainer's own seconds, completed): a completed trial's final ``seconds`` less its
    callbacks; a stopped one's epochs."""
    last = rows[-1]
    if "seconds" in last:
        callbacks = last.get("trial_callback_s", last.get("callback_s", 0.0))
        return last["seconds"] - callbacks, True
    return sum(r.get("epoch_seconds", 0.0) for r in rows), False


def fixed_after_first(trials: dict) -> tuple[float | None, int]:
    """Fixed cost per trial after a worker's first trial: per worker process, the time from the
    end of its first trial to the end of its last, less the later trials' training."""
    by_pid: dict[int, list[dict]] = {}
    for t in trials.values():
        by_pid.setdefault(t["pid"], []).append(t)
    span = train = 0.0
    later = 0
    for ts in by_pid.values():
        if len(ts) > 1 and all(t["end"] for t in ts):
            ts.sort(key=lambda t: t["end"])
            span += ts[-1]["end"] - ts[0]["end"]
            train += sum(t["train"] for t in ts[1:])
            later += len(ts) - 1
    return ((span - train) / later if later else None), later


def summarise(path: str, trials: dict, search_wall: float, trials_wall: float,
              ray_start: float) -> dict:
    for t in trials.values():
        t["train"], t["completed"] = training_seconds(t["rows"])
    n = len(trials)
    train = sum(t["train"] for t in trials.values())
    ideal = train / CONCURRENCY
    later_cost, later = fixed_after_first(trials)
    ends = sorted(t["end"] for t in trials.values() if t["end"])
    # one slot idle at the end: from the second-to-last trial's end to the last's (no trial left)
    tail = ends[-1] - ends[-2] if len(ends) == n and n > 1 else None
    return {"path": path, "trials": n,
            "completed": sum(t["completed"] for t in trials.values()),
            "epochs": sum(len(t["rows"]) for t in trials.values()),
            "workers": len({t["pid"] for t in trials.values()}),
            "ray_start": ray_start, "search_wall": search_wall, "trials_wall": trials_wall,
            "train": train, "ideal": ideal, "ratio_trials": trials_wall / ideal,
            "fixed_per_trial": (trials_wall * CONCURRENCY - train) / max(n, 1),
            "fixed_after_first": later_cost, "later_trials": later, "tail": tail}


def mlflow_counts(uri: str) -> dict:
    """What a tracking store holds: runs, params, metric keys and points, artifact files and
    bytes, registered models and their versions (counted with the MlflowClient)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=10000)
    c = dict(runs=len(runs), params=0, metric_keys=0, metric_points=0, tags=0, artifacts=0,
             artifact_bytes=0)

    def walk(run_id, path=None):
        for a in client.list_artifacts(run_id, path):
            if a.is_dir:
                walk(run_id, a.path)
            else:
                c["artifacts"] += 1
                c["artifact_bytes"] += a.file_size or 0

    for r in runs:
        c["params"] += len(r.data.params)
        c["tags"] += len([k for k in r.data.tags if not k.startswith("mlflow.")])
        c["metric_keys"] += len(r.data.metrics)
        for key in r.data.metrics:
            c["metric_points"] += len(client.get_metric_history(r.info.run_id, key))
        walk(r.info.run_id)
    models = client.search_registered_models()
    c["registered_models"] = len(models)
    c["model_versions"] = sum(len(client.search_model_versions(f"name='{m.name}'"))
                              for m in models)
    return c


@contextlib.contextmanager
def fresh_ray():
    """A local Ray started for one path only (its environment restored after: the library sets
    Tune's variables in this process), and the seconds its start took."""
    import ray

    env = dict(os.environ)
    t0 = time.time()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield time.time() - t0
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(env)


def run_library(out: Path, name: str, args) -> dict:
    from mona_tune.search.driver import run_search
    from mona_tune.search.plan import plan_search

    with fresh_ray() as ray_start:
        t0 = time.time()
        plan = plan_search(library_request(out, name, n_train=args.n_train,
                                           num_samples=args.num_samples))
        with contextlib.redirect_stdout(io.StringIO()):
            outcome = run_search(plan.scfg, plan.space, plan.param_space, resume=plan.resume,
                                 space_yaml=plan.space_yaml)
        wall = time.time() - t0
    from mona_tune.tracking import mlflow_runs as mr

    uri = plan.scfg.tracking_uri
    children = mr.child_runs(uri, mr.ensure_experiment(uri, TASK), outcome.parent_run_id)
    trials = trial_rows(Path(outcome.experiment_path), run_ends(uri, children))
    r = summarise("library", trials, wall, outcome.timings["trials_s"], ray_start)
    r["best"] = outcome.best_metrics.get(METRIC)
    r["phases"] = outcome.timings
    return r


def run_hand(out: Path, name: str, args) -> dict:
    with fresh_ray() as ray_start:
        t0 = time.time()
        tuner = hand_tuner(out, name, n_train=args.n_train, num_samples=args.num_samples,
                           reuse_actors=args.hand_reuse_actors)
        t1 = time.time()
        with contextlib.redirect_stdout(io.StringIO()):  # Tune's configuration box
            results = tuner.fit()
        t2 = time.time()
        best = results.get_best_result(metric=METRIC, mode=MODE, scope="last")
        wall = time.time() - t0
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{out / 'hand' / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(HAND_EXPERIMENT).experiment_id],
                              max_results=10000)
    trials = trial_rows(out / "hand" / "runs" / name, run_ends(uri, runs))
    r = summarise("hand", trials, wall, t2 - t1, ray_start)
    r["best"] = best.metrics.get(METRIC)
    return r


def warm_caches(n_train: int) -> dict:
    """Data and source model into this machine's cache (what the trials of both paths load)."""
    from mona_tune.cluster.node_cache import fill_caches

    fixed = {k: v for k, v in HAND_FIXED.items()}
    out, _ = fill_caches({**fixed, "n_train": n_train})
    return {k: round(v, 1) for k, v in out.items() if k.endswith("_s")}


# ----------------------------------------------------------------- the report
def _mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(vals) if vals else None


def _fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(by_path: dict[str, list[dict]], counts: dict[str, dict], searches: int) -> None:
    cols = [("trials", "trials", "d"), ("completed", "done", "d"), ("epochs", "epochs", "d"),
            ("workers", "workers", "d"), ("ray_start", "ray s", ".1f"),
            ("search_wall", "search s", ".1f"), ("trials_wall", "trials s", ".1f"),
            ("train", "train s", ".1f"), ("ideal", "ideal s", ".1f"),
            ("ratio_trials", "trials/ideal", ".2f"), ("fixed_per_trial", "fixed s/trial", ".2f"),
            ("fixed_after_first", "after 1st", ".2f"), ("tail", "tail s", ".1f"),
            ("best", METRIC, ".4f")]
    print(f"{'path':8} {'run':>3} " + " ".join(f"{h:>{max(len(h), 8)}}" for _, h, _ in cols))
    for path, rows in by_path.items():
        for i, r in enumerate(rows + ([] if len(rows) < 2 else [None])):
            label = "mean" if r is None else str(i + 1)
            vals = []
            for key, h, spec in cols:
                v = _mean(rows, key) if r is None else r.get(key)
                if r is None and spec == "d" and v is not None:
                    spec = ".1f"
                vals.append(f"{_fmt(v, spec):>{max(len(h), 8)}}")
            print(f"{path:8} {label:>3} " + " ".join(vals))
    print("(train = the trainers' own seconds; ideal = train / 2 slots; fixed s/trial = (trials "
          "wall x 2 - train) / trials; after 1st = the same per trial after a worker process's "
          "first, '-' where every trial had a worker of its own; tail = one slot idle at the "
          "end, from the second-to-last trial's end to the last's, part of the fixed cost)")
    print(f"\nMLflow: each path's store after its {searches} search(es) (the library's registered "
          "model holds a version per search)")
    keys = ["runs", "params", "tags", "metric_keys", "metric_points", "artifacts",
            "artifact_bytes", "registered_models", "model_versions"]
    print(f"{'path':8} " + " ".join(f"{k:>17}" for k in keys))
    for path, c in counts.items():
        print(f"{path:8} " + " ".join(f"{c[k]:>17}" for k in keys))


def write_results(lib: dict, hand: dict, command: str, hand_reuse_actors: bool) -> None:
    from results_json import record

    key = "overhead_vs_hand_written" + ("_reusing_actors" if hand_reuse_actors else "")
    record(key, round(lib["search_wall"] / hand["search_wall"], 3), goal="<= 1.05",
           command=command)
    record("overhead_vs_ideal_20s", round(lib["ratio_trials"], 3), goal="<= 1.10",
           command=command)
    after = lib["fixed_after_first"]
    record("fixed_cost_per_trial_s", round(after if after is not None else
                                           lib["fixed_per_trial"], 2),
           goal="<= 1 s after a worker's first trial", command=command)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=N_TRAIN)
    p.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    p.add_argument("--repeats", type=int, default=1,
                   help="pairs of searches, in the order library-hand, hand-library, ...")
    p.add_argument("--hand-reuse-actors", action="store_true",
                   help="the hand-written search reuses actors (Tune's default: it does not)")
    p.add_argument("--paths", nargs="+", choices=["library", "hand"], default=["library", "hand"],
                   help="one path alone (profiling): no ratio to the other, nothing recorded")
    p.add_argument("--out", type=Path, default=OUT, help="storage and MLflow stores")
    p.add_argument("--no-record", action="store_true", help="leave results.json alone")
    args = p.parse_args(argv)
    out = args.out.resolve()
    for sub in ("library", "hand"):  # fresh stores: the MLflow counts are this run's searches
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)

    load_before = os.getloadavg()
    warm = warm_caches(args.n_train)
    print(f"caches warm ({warm}); load before {load_before[0]:.2f}", file=sys.stderr, flush=True)
    stamp = time.strftime("%H%M%S")
    by_path: dict[str, list[dict]] = {"library": [], "hand": []}
    t_all = time.time()
    for i in range(args.repeats):
        order = ("library", "hand") if i % 2 == 0 else ("hand", "library")
        for path in (x for x in order if x in args.paths):
            name = f"peer-{path}-{stamp}-{i + 1}"
            r = (run_library if path == "library" else run_hand)(out, name, args)
            by_path[path].append(r)
            print(f"  {name}: search {r['search_wall']:.1f}s, trials {r['trials_wall']:.1f}s, "
                  f"train {r['train']:.1f}s, load {os.getloadavg()[0]:.2f}", file=sys.stderr,
                  flush=True)
    by_path = {k: v for k, v in by_path.items() if v}
    counts = {k: mlflow_counts(f"sqlite:///{out / k / 'mlflow.db'}") for k in by_path}
    load_after = os.getloadavg()

    mean = {path: {k: _mean(rows, k) for k in rows[0]
                   if isinstance(rows[0][k], (int, float)) or rows[0][k] is None}
            for path, rows in by_path.items()}
    print(f"{args.num_samples} trials per search, {CONCURRENCY} at a time (1 CPU each); space "
          f"search_spaces/darcy.yaml at n_train {args.n_train} (epochs 6, batch 16, "
          f"warmup_epochs 0-2); ASHA on stage2_epoch (grace 1, rf 2, max_t 6); Optuna TPE seed "
          f"{SEED}; hand-written reuse_actors={args.hand_reuse_actors}; {args.repeats} "
          f"repeat(s); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.time() - t_all:.0f} s")
    print_table(by_path, counts, args.repeats)
    for r in by_path.get("library", []):
        print("  library phases: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s"
                                               for k, v in r["phases"].items()))
    if len(mean) < 2:
        r = next(iter(mean.values()))
        print(f"headline: {args.paths[0]} alone: {r['ratio_trials']:.2f}x its ideal, "
              f"{r['fixed_per_trial']:.2f} s fixed per trial")
        return 0
    lib, hand = mean["library"], mean["hand"]
    command = "python benchmarks/peer_search.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if not args.no_record:
        write_results(lib, hand, command, args.hand_reuse_actors)
    after = lib["fixed_after_first"]
    print(f"headline: overhead_vs_hand_written {lib['search_wall'] / hand['search_wall']:.2f} "
          f"(goal <= 1.05), overhead_vs_ideal_20s {lib['ratio_trials']:.2f} (goal <= 1.10), "
          f"fixed_cost_per_trial_s {_fmt(after, '.2f')} after a worker's first trial, "
          f"{lib['fixed_per_trial']:.2f} over all (goal <= 1 s); hand-written: "
          f"{hand['ratio_trials']:.2f}x its ideal, {hand['fixed_per_trial']:.2f} s fixed per trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
