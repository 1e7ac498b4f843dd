"""The same small search on one Ray node (2 CPUs) and on two local nodes (2 x 1 CPU).

Both clusters are started with ``ray start`` (token authentication on) and joined with
``--address``, the way a cluster user runs the search; the second node lives in its own mount
namespace with an empty private cache, so the two-node case pays for shipping the prepared data
and source model to it. Tracking goes to ``mona-tune tracking-server`` (SQLite, proxied
artifacts) in both cases, storage to a folder both nodes share. The head's cache is warmed first,
so neither case trains the source model inside the measurement.

Per case: wall time of the whole search and of the trials phase, the ideal (sum of the trials'
training times / 2 concurrent trials), the per-trial fixed cost ((trials wall x 2 - sum of
training) / trials), the preflight and the cache preparation.

    python benchmarks/multinode.py [--trials 6]

Needs root (``unshare -m`` and tmpfs mounts); the cluster helpers are the tests' own
(``tests/services.py``). The last line is the headline.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "multinode"
sys.path.insert(0, str(ROOT / "tests"))

import services  # noqa: E402

SPACE = """
searched:
  lam: {uniform: [0.0, 1.0]}
  inner_lr: {loguniform: [1.0e-4, 1.0e-2]}
fixed: {warmup_epochs: 1, epochs: 4, batch_size: 8, n_train: 100, n_test: 16, resolution: 29,
        device: cpu}
scheduler: {kind: fifo}
"""


def run_case(label: str, two_nodes: bool, trials: int, cache: Path) -> dict:
    from mona_tune.tracking import mlflow_runs as mr

    cluster = services.start_cluster({"MONA_TUNE_CACHE": str(cache)}, head_cpus=1 if two_nodes
                                     else 2, node_b=two_nodes)
    server = None
    try:
        db = cluster.shared / "mlflow.db"
        server = services.start_tracking_server(f"sqlite:///{db}", cluster.shared / "mlartifacts",
                                                cluster.base / "mlflow.log")
        space = OUT / "space.yaml"
        space.write_text(textwrap.dedent(SPACE))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MONA_TUNE_"))}
        env.update(RAY_AUTH_TOKEN=cluster.token, RAY_AUTH_MODE="token", PYTHONUNBUFFERED="1",
                   HOME=str(cluster.base / "head_home"))
        cmd = [sys.executable, "-m", "mona_tune.cli", "search", "--space", str(space), "--name",
               label, "--storage", str(cluster.shared / "runs"), "--tracking-uri", server.url,
               "--address", cluster.gcs, "--num-samples", str(trials), "--max-concurrent", "2",
               "--quiet", "--no-register"]
        t0 = time.time()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.time() - t0
        if done.returncode:
            raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
        timings = dict(re.findall(r"(\w+) ([\d.]+)s", done.stdout.rsplit("time: ", 1)[-1]))
        client = mr.get_client(server.url)
        exp = client.get_experiment_by_name("mona-tune-darcy")
        runs = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mona.search_name` = '{label}' and "
                                                "tags.`mona.role` = 'trial'")
        train = [r.data.metrics["seconds"] - r.data.metrics.get("trial_callback_s", 0.0)
                 for r in runs if "seconds" in r.data.metrics]
        nodes = {r.data.tags.get("mona.node_id") for r in runs}
        trials_wall = float(timings["trials"])
        return {"case": label, "trials": len(train), "nodes": len(nodes), "search_wall": wall,
                "trials_wall": trials_wall, "ideal": sum(train) / 2,
                "fixed": (trials_wall * 2 - sum(train)) / max(len(train), 1),
                "mean_train": sum(train) / max(len(train), 1),
                "preflight": float(timings.get("preflight", 0)),
                "prepare": float(timings.get("prepare", 0)),
                "copy": float(timings.get("prepare_copy", 0))}
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "cache"
    # warm the head's cache once (data + embedded source model), outside the measurement
    os.environ["MONA_TUNE_CACHE"] = str(cache)
    from mona_tune.config import TrainConfig
    from mona_tune.train import loaded

    cfg = TrainConfig(warmup_epochs=1, epochs=4, n_train=100, n_test=16, resolution=29)
    loaded.task_data(cfg)
    loaded.source_model(cfg)

    rows = []
    for label, two in (("one-node", False), ("two-nodes", True)):
        r = run_case(label, two, args.trials, cache)
        rows.append(r)
        print(f"  {label}: search {r['search_wall']:.1f}s", file=sys.stderr, flush=True)

    print(f"{'case':10} {'nodes':>5} {'trials':>6} {'train s':>8} {'ideal s':>8} "
          f"{'trials s':>9} {'search s':>9} {'fixed s/trial':>13} {'preflight s':>11} "
          f"{'prepare s':>9} {'copy s':>6}")
    for r in rows:
        print(f"{r['case']:10} {r['nodes']:>5} {r['trials']:>6} {r['mean_train']:>8.1f} "
              f"{r['ideal']:>8.1f} {r['trials_wall']:>9.1f} {r['search_wall']:>9.1f} "
              f"{r['fixed']:>13.2f} {r['preflight']:>11.1f} {r['prepare']:>9.1f} "
              f"{r['copy']:>6.1f}")
    one, two = rows
    print(f"headline: {args.trials} trials, 2 at a time: one node (2 CPU) "
          f"{one['search_wall']:.0f}s "
          f"({one['fixed']:.2f}s fixed per trial), two nodes (2 x 1 CPU) "
          f"{two['search_wall']:.0f}s ({two['fixed']:.2f}s fixed per trial, trials on "
          f"{two['nodes']} nodes)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record

    record("two_node_vs_one_node_wall", round(two["search_wall"] / one["search_wall"], 3),
           goal="<= 1.10 (the same 2 CPUs as two 1-CPU nodes)",
           command="python benchmarks/multinode.py " + " ".join(argv or sys.argv[1:]),
           one_node_s=round(one["search_wall"], 1), two_nodes_s=round(two["search_wall"], 1),
           trials=args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
