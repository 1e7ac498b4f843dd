"""The trial function: a sampled config -> ``TrainConfig`` -> ``Trainer`` -> Tune and MLflow.

Per epoch (both stages) the trainer's callback
- logs the epoch's metrics to the trial's MLflow child run (step = global epoch);
- reports them to Tune with a checkpoint (every ``checkpoint_every`` epochs). ASHA compares trials
  on ``stage2_epoch`` (``time_attr``), so stage-1 epochs (stage2_epoch = 0) never meet a rung and a
  long warm-up does not make a trial look worse.
At the end of stage 1 the embedder is logged to the child run (``embedder/``).

The last stage-2 epoch is reported after ``fit()`` returns, together with the test metric and the
source-probe error: ASHA stops a trial when it reaches ``max_t``, and nothing after that report
would run. A stopped trial's thread ends inside ``tune.report`` (SystemExit); its child run is
tagged here when possible and, authoritatively, by the driver after the search.

Retries and resumed searches restore the trainer from ``tune.get_checkpoint()`` and continue the
same child run (found by its ``ray_trial_id`` tag); epochs already in MLflow are not logged again.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mona_tune.tracking import mlflow_runs as mr

logger = logging.getLogger(__name__)

TRIAL_STATE = "mona_trial.json"
TAG_NODE_IDS = "mona.node_ids"  # every node the trial's attempts ran on, in order
TRAINER_DIR = "trainer"
# numbers in the trainer's final dict that are settings, not results
_NOT_METRICS = frozenset({"stage1_epochs", "epochs", "seed"})


@dataclass(frozen=True)
class TrialSettings:
    """What every trial needs besides its hyperparameters (passed with ``tune.with_parameters``)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    search_name: str
    task: str
    metric: str  # e.g. "rel_l2"
    mode: str = "min"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    checkpoint_every: int = 1
    # Local storage: the trial keeps the payload of its newest checkpoint and of its best
    # ``keep_checkpoints - 1`` others and empties the rest itself; Tune deletes none (see
    # ``prune_checkpoints``). None: Tune's own retention (cloud storage).
    keep_checkpoints: int | None = None
    experiment_path: str = ""  # local storage: <storage>/<name>, the trials' folders in it
    searched: tuple[str, ...] = ()
    log_embedder: bool = True

    @property
    def val_key(self) -> str:
        return f"val_{self.metric}"

    @property
    def test_key(self) -> str:
        return f"test_{self.metric}"


def _numeric(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = v
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
            out[k] = v.item()
    return out


def trial_dir_name(trial_id: str) -> str:
    """``trial_<id>``: Tune's default repeats every fixed field in each directory name."""
    return f"trial_{trial_id}"


def _file_sizes(directory: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(directory.iterdir()) if f.is_file()}


def _whole(d: Path, state: dict) -> bool:
    """The trainer state in ``d`` is there and as large as when it was written: a checkpoint
    that a killed process left half-copied into the storage is never loaded."""
    try:
        sizes = _file_sizes(d / TRAINER_DIR)
    except OSError:
        return False
    return bool(sizes) and sizes == state.get("trainer_files", sizes)


def checkpoint_states(trial_dir: Path, whole: bool = True) -> list[tuple[Path, dict]]:
    """The trial's checkpoint folders with their trial state: those that still hold a whole
    trainer state (``whole=False``: also those emptied by :func:`prune_checkpoints`)."""
    out = []
    for d in sorted(trial_dir.glob("checkpoint_*")):
        try:
            state = json.loads((d / TRIAL_STATE).read_text())
        except (OSError, ValueError):
            continue
        if not whole or _whole(d, state):
            out.append((d, state))
    return out


def prune_checkpoints(trial_dir: Path, keep: int, mode: str) -> None:
    """Empty all but the newest and the ``keep - 1`` best checkpoints of a trial (local storage).

    Tune's own retention deletes whole checkpoint folders as soon as a better one arrives, while
    its experiment snapshot (which ``--resume`` reads) is written every few seconds: a driver
    killed in between leaves a snapshot naming a deleted checkpoint, and Tune then refuses to
    restore the trial. Here the folders stay (only the trainer state inside is removed), and a
    restore takes the newest checkpoint that still holds a state (:func:`newest_checkpoint`).
    """
    states = checkpoint_states(trial_dir)
    if len(states) <= keep:
        return
    newest = max(states, key=lambda s: s[1].get("global_epoch", -1))

    def rank(item):  # best first; a checkpoint without a finite score last
        score = item[1].get("score")
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            return math.inf
        return score if mode == "min" else -score

    others = sorted((s for s in states if s is not newest), key=rank)
    for d, _ in others[keep - 1:]:
        shutil.rmtree(d / TRAINER_DIR, ignore_errors=True)


def newest_checkpoint(path: Path) -> Path:
    """The newest checkpoint folder beside ``path`` (Tune's choice) that still holds a state."""
    states = checkpoint_states(path.parent)
    if not states:
        return path
    return max(states, key=lambda s: s[1].get("global_epoch", -1))[0]


class _TrialRun:
    """State of one trial attempt: its MLflow run, what was logged, what to report last."""

    def __init__(self, settings: TrialSettings, cfg, trial_id: str, trial_name: str):
        self.s = settings
        self.cfg = cfg
        self.trial_id = trial_id
        params = cfg.model_dump(mode="json")
        params["searched"] = ",".join(settings.searched)
        self.child = mr.open_child_run(
            settings.tracking_uri, settings.experiment_id, settings.parent_run_id,
            trial_id=trial_id, trial_name=trial_name, search_name=settings.search_name,
            task=settings.task, params=params,
        )
        self.run_id, self.logged_up_to = self.child.run_id, self.child.logged_up_to
        self.stage1_epochs = cfg.stage1_epochs
        self.last: dict[str, Any] | None = None
        self.last_global = max(self.logged_up_to, 0)
        self.completed = False
        self.setup_s = 0.0
        self.callback_s = 0.0
        # the embedder is uploaded before the metrics of stage 1's last epoch (before the first
        # stage-2 epoch's without a stage 1): metrics that far mean the embedder is whole
        self.embedder_logged = self.logged_up_to >= self.stage1_epochs and self.logged_up_to >= 0

    # -- helpers
    def global_epoch(self, m: dict) -> int:
        if int(m.get("stage", 2)) == 1:
            return int(m["epoch"])
        return self.stage1_epochs + int(m["epoch"])

    def log_embedder(self, trainer) -> None:
        if self.embedder_logged or not self.s.log_embedder:
            return
        with tempfile.TemporaryDirectory(prefix="mona-embedder-") as d:
            path = Path(d) / "embedder"
            trainer.save_embedder(path)
            mr.log_artifacts(self.s.tracking_uri, self.run_id, path, mr.EMBEDDER_ARTIFACT)
        self.embedder_logged = True

    def checkpoint(self, trainer, metrics: dict):
        """The trainer's state and the trial's (``metrics``: the result reported with it, which
        a resumed driver takes up when its snapshot missed this checkpoint)."""
        from ray import tune

        d = Path(tempfile.mkdtemp(prefix="mona-ckpt-"))
        trainer.save_checkpoint(d / TRAINER_DIR)
        (d / TRIAL_STATE).write_text(json.dumps({
            "run_id": self.run_id, "trial_id": self.trial_id,
            "global_epoch": int(metrics["global_epoch"]), "score": metrics.get(self.s.val_key),
            "trainer_files": _file_sizes(d / TRAINER_DIR),
            "metrics": {**{k: v for k, v in metrics.items() if isinstance(v, str)},
                        **_numeric(metrics)},
        }))
        return d, tune.Checkpoint.from_directory(str(d))

    def report(self, trainer, metrics: dict, *, final: bool = False) -> None:
        from ray import tune

        g = int(metrics["global_epoch"])
        metrics = {**metrics, "mlflow_run_id": self.run_id}
        with_ckpt = final or g % self.s.checkpoint_every == 0
        if with_ckpt:
            d, ckpt = self.checkpoint(trainer, metrics)
            try:
                tune.report(metrics, checkpoint=ckpt)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if self.s.keep_checkpoints:
                prune_checkpoints(Path(self.s.experiment_path) / trial_dir_name(self.trial_id),
                                  self.s.keep_checkpoints, self.s.mode)
        else:
            tune.report(metrics)

    # -- the trainer's callback
    def on_epoch(self, trainer, metrics: dict) -> None:
        t0 = time.perf_counter()
        try:
            self._on_epoch(trainer, metrics)
        finally:
            self.callback_s += time.perf_counter() - t0

    def _on_epoch(self, trainer, metrics: dict) -> None:
        m = _numeric(metrics)
        stage = int(m.get("stage", 2))
        if stage == 2 and not self.embedder_logged:
            # no stage-1 epoch ran (warmup_epochs 0, ft, scratch): the embedder stage 2 starts from
            # is the initial one, saved before training (see run_trial); log what we have
            self.log_embedder(trainer)
        g = self.global_epoch(m)
        self.last_global = g
        m["stage2_epoch"] = int(m.get("stage2_epoch", m["epoch"] if stage == 2 else 0))
        m["global_epoch"] = g
        if stage == 1 and g == self.stage1_epochs:
            # the embedder before the epoch's metrics: a run whose metrics reach the end of stage 1
            # holds its whole embedder, which a later attempt infers from the metrics (__init__).
            # The other order lost it to a worker killed during the upload.
            self.log_embedder(trainer)
        if g > self.logged_up_to:
            mr.log_metrics(self.s.tracking_uri, self.run_id, m, step=g)
        if stage == 2 and m["stage2_epoch"] >= self.cfg.epochs:
            self.last = m  # the last epoch is reported with the final metrics, after fit()
            return
        self.report(trainer, m)

    def finish(self, trainer, final: dict) -> None:
        last = dict(self.last or {})
        fin = {k: v for k, v in _numeric(final).items() if k not in _NOT_METRICS}
        # what the search adds to a trial: set-up before fit() (TrainConfig, child run, trainer
        # construction) and the per-epoch callbacks (MLflow, checkpoint, report to Tune); the
        # trainer's own ``seconds`` include the callbacks of all but the last epoch
        fin["trial_setup_s"] = self.setup_s
        fin["trial_callback_s"] = self.callback_s
        g = int(last.get("global_epoch", self.stage1_epochs + self.cfg.epochs))
        # the last epoch's values (val metric, probe error) are in the run already
        new = {k: v for k, v in fin.items() if k not in last}
        mr.log_metrics(self.s.tracking_uri, self.run_id, new, step=g)
        mr.set_tags(self.s.tracking_uri, self.run_id, {
            mr.TAG_OUTCOME: "completed",
            mr.TAG_OUTCOME_DETAIL: f"completed {self.cfg.epochs} stage-2 epochs",
        })
        mr.end_run(self.s.tracking_uri, self.run_id, "FINISHED")
        report = {**last, **fin, "global_epoch": g, "stage": 2,
                  "stage2_epoch": int(last.get("stage2_epoch", self.cfg.epochs))}
        self.completed = True  # ASHA stops a trial at max_t: SystemExit inside this report
        self.report(trainer, report, final=True)

    def stopped(self) -> None:
        """The scheduler stopped the trial (SystemExit inside ``tune.report``)."""
        if self.completed:
            return
        try:
            g = self.last_global
            mr.set_tags(self.s.tracking_uri, self.run_id, {
                mr.TAG_OUTCOME: "stopped_early",
                mr.TAG_OUTCOME_DETAIL: "stopped by the scheduler",
                "mona.stopped_at_global_epoch": g,
            })
            mr.end_run(self.s.tracking_uri, self.run_id, "FINISHED")
        except Exception:  # the driver tags it after the search anyway
            logger.debug("could not tag a stopped trial", exc_info=True)

    def diverged(self, err: BaseException, mode: str) -> None:
        """Training diverged (NaN/inf): deterministic, so not worth Tune's retries. The trial ends
        (outcome ``diverged``, the reason in ``mona.outcome_detail``) with the worst possible
        value, which the searcher learns from and ASHA ranks last."""
        self.failed(err, outcome="diverged")
        worst = math.inf if mode == "min" else -math.inf
        self.completed = True
        from ray import tune

        tune.report({self.s.val_key: worst, "diverged": 1, "error": str(err)[:300],
                     "stage": 2, "stage2_epoch": self.cfg.epochs,
                     "global_epoch": self.stage1_epochs + self.cfg.epochs,
                     "mlflow_run_id": self.run_id})

    def failed(self, err: BaseException, outcome: str = "failed") -> None:
        try:
            text = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            mr.set_tags(self.s.tracking_uri, self.run_id, {
                mr.TAG_OUTCOME: outcome, mr.TAG_OUTCOME_DETAIL: text,
            })
            mr.end_run(self.s.tracking_uri, self.run_id, "FAILED")
        except Exception:
            logger.debug("could not tag a failed trial", exc_info=True)


def _node_history(tracking_uri: str, run_id: str, node_tags: dict) -> dict:
    """``mona.node_ids``: every node an attempt of the trial ran on, the first attempt's first
    (``mona.node_id`` names the latest attempt's only); the search names the trials of a lost
    node by it."""
    node_id = node_tags.get(mr.TAG_NODE_ID)
    if not node_id:
        return {}
    run = mr.retrying(mr.get_client(tracking_uri).get_run, run_id)
    seen = [n for n in run.data.tags.get(TAG_NODE_IDS, "").split(",") if n]
    return {TAG_NODE_IDS: ",".join(seen if node_id in seen else [*seen, node_id])}


def run_trial(config: dict, settings: TrialSettings) -> None:
    """The Ray Tune function trainable (wrapped with ``tune.with_parameters``): the trial's
    identity, node and checkpoint from Tune and Ray, then :func:`train_trial`."""
    import ray
    from ray import tune

    ctx = tune.get_context()
    node = {mr.TAG_NODE_ID: ray.get_runtime_context().get_node_id(),
            mr.TAG_NODE_IP: ray.util.get_node_ip_address()}
    train_trial(config, settings, trial_id=ctx.get_trial_id(), trial_name=ctx.get_trial_name(),
                checkpoint=tune.get_checkpoint(), node_tags=node)


# long: one trial from start to end in order (open run, train, report, close), as a reader
# follows it; each step is a call to a named helper
def train_trial(config: dict, settings: TrialSettings, *, trial_id: str, trial_name: str,
                checkpoint=None, node_tags: dict | None = None) -> None:
    """One trial attempt: a new trainer, or the one in ``checkpoint`` (a ``tune.Checkpoint``);
    per epoch MLflow and ``tune.report``; the outcome on its child run. Needs no running Ray."""
    import torch
    from ray import tune

    from mona_tune.config import TrainConfig
    from mona_tune.models.source import trial_threads

    t_start = time.perf_counter()
    mr.ride_out_outages()
    for name in ("ray.train", "ray.tune"):  # one line per checkpoint otherwise
        logging.getLogger(name).setLevel(logging.WARNING)

    values = dict(config)
    if values.get("num_threads") is None:
        values["num_threads"] = trial_threads(settings.cpus_per_trial)
    torch.set_num_threads(int(values["num_threads"]))
    cfg = TrainConfig(**values)

    run = _TrialRun(settings, cfg, trial_id, trial_name)
    if node_tags:
        mr.set_tags(settings.tracking_uri, run.run_id,
                    {**node_tags, **_node_history(settings.tracking_uri, run.run_id, node_tags)})
    if run.child.outcome == "completed":
        # completed in an earlier attempt whose result Tune did not record (the driver died
        # between the two): report that result again instead of training again
        m = {k: v for k, v in run.child.metrics.items() if not k.startswith("timing_")}
        run.completed = True
        tune.report({**m, "mlflow_run_id": run.run_id, "stage": 2,
                     "stage2_epoch": int(m.get("stage2_epoch", cfg.epochs))})
        return
    from mona_tune.train.trainer import Trainer, TrainingDiverged

    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                d = Path(d)
                if settings.keep_checkpoints:  # local storage, checkpoints kept by the trial
                    d = newest_checkpoint(d)
                state = json.loads((d / TRIAL_STATE).read_text())
                trainer = Trainer.from_checkpoint(d / TRAINER_DIR, callback=run.on_epoch)
            if state.get("run_id") != run.run_id:
                logger.warning("checkpoint of run %s restored into run %s", state.get("run_id"),
                               run.run_id)
            mr.set_tags(settings.tracking_uri, run.run_id,
                        {"mona.restored_from_global_epoch": state.get("global_epoch")})
        else:
            trainer = Trainer(cfg, callback=run.on_epoch)
            if cfg.stage1_epochs == 0:
                run.log_embedder(trainer)
        from mona_tune.train.provenance import announce

        mr.log_params(settings.tracking_uri, run.run_id, announce(trainer))
        run.setup_s = time.perf_counter() - t_start
        final = trainer.fit()
        run.finish(trainer, final)
    except SystemExit:
        run.stopped()
        raise
    except TrainingDiverged as err:
        run.diverged(err, settings.mode)
    except BaseException as err:
        run.failed(err)
        raise
