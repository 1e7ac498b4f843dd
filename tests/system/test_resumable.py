"""Resume from experiment states that disagree with the searcher's state, built on purpose.

Tune snapshots the trial list (``experiment_state-*.json``), the search generator's count
(``search_gen_state-*.json``) and the Optuna study (``searcher-state-*.pkl``) as separate files, and
``Tuner.restore`` reads each one on its own: a driver killed while an upload mixed two snapshots
leaves a trial list that is newer or older than the searcher (``search/resumable.py``). Here a
tiny search (4 trials, 2 at a time, 3 steps each; the searcher and scheduler the driver builds)
is held at two moments by files its trials wait on, never by the clock:

- E: trials 1 and 2 have reported step 1 (with a checkpoint); trials 3 and 4 do not exist yet;
- F: trials 1 and 2 are done; trial 3 has started but not reported (a snapshot between a trial's
  start and its first report); trial 4 has reported step 1.

Each case resumes from a copy of the experiment folder whose three files come from E or F, as a
driver killed between two uploads leaves them, and checks that the search ends exact. The same
for seeded random search (``search/resumable.py``'s ``ResumableRandom``), whose state is two files:
the trial list and the generator's.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts Ray in this process

STEPS = 3
N = 4
STATE_FILES = {  # per searcher: the trial list, the generator's state, the study
    "optuna": {"exp": "experiment_state-*.json", "gen": "search_gen_state-*.json",
               "pkl": "searcher-state-*.pkl"},
    "random": {"exp": "experiment_state-*.json", "gen": "basic-variant-state-*.json"},
}


def _score(x: float, step: int) -> float:
    return (x - 0.3) ** 2 + 1.0 / step


def _slot(gate: Path, trial_id: str) -> int:
    """The order in which the trial first started (0-based), claimed with exclusive files."""
    for k in range(1000):  # the resumed searches' new trials claim slots after the first four
        path = gate / f"slot-{k}"
        try:
            with open(path, "x") as f:
                f.write(trial_id)
            return k
        except FileExistsError:
            if path.read_text() == trial_id:
                return k
    raise RuntimeError("more trials than the search has")


def trainable(config: dict) -> None:
    import tempfile

    from ray import tune

    gate = Path(config["gate"])
    trial_id = tune.get_context().get_trial_id()
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads(Path(d, "step.json").read_text())["step"]
    slot = _slot(gate, trial_id)
    for step in range(start + 1, STEPS + 1):
        hold = gate / f"hold-{slot}-{step}"
        deadline = time.time() + 120  # a test that releases nothing fails instead of hanging
        while hold.exists() and time.time() < deadline:
            time.sleep(0.05)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "step.json").write_text(json.dumps({"step": step}))
            tune.report({"score": _score(config["x"], step), "step": step},
                        checkpoint=tune.Checkpoint.from_directory(d))
        (gate / f"reported-{slot}-{step}").touch()


def _newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def _snapshot(exp: Path, kind: str) -> dict | None:
    """What the storage's newest files say: trial id -> (status, last step), the trials the
    generator created and (Optuna) the trials the study holds; None while a file is missing or
    being written."""
    import pickle

    paths = {k: _newest(exp, p) for k, p in STATE_FILES[kind].items()}
    if None in paths.values():
        return None
    try:
        state = json.loads(paths["exp"].read_text())
        trials = {}
        for trial_json, meta in state["trial_data"]:
            t, m = json.loads(trial_json), json.loads(meta)
            last = json.loads(m["last_result"]) if isinstance(m["last_result"], str) \
                else m["last_result"]
            trials[t["trial_id"]] = (t["status"], (last or {}).get("step"))
        gen = pickle.loads(paths["gen"].read_bytes())  # a pickle, despite its name
        if kind == "random":
            return {"trials": trials, "counter": gen["_iterators"][0].counter, "study": 0}
        study = pickle.loads(paths["pkl"].read_bytes())["_ot_trials"]
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, KeyError):
        return None
    return {"trials": trials, "counter": gen["counter"], "study": len(study)}


def _wait(check, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _slots(gate: Path) -> dict[str, int]:
    return {p.read_text(): int(p.name.split("-")[1]) for p in gate.glob("slot-*")}


@pytest.fixture(scope="module", params=["optuna", "random"])
def states(request, tmp_path_factory):
    """Run the search once, copying its experiment folder at E and at F; yields
    (the folder copies, trial id -> slot, trial id -> x, the finished run's scores)."""
    import ray
    from ray import cloudpickle, tune

    from mona_tune.config import SchedulerSpec, SearchConfig
    from mona_tune.search import tuner as search_tuner

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    kind = request.param
    base = tmp_path_factory.mktemp(f"resumable-{kind}")
    gate, storage = base / "gate", base / "runs"
    gate.mkdir()
    for hold in ("hold-0-2", "hold-1-2", "hold-2-1", "hold-3-2"):
        (gate / hold).touch()
    mp = pytest.MonkeyPatch()
    mp.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0.2")
    mp.setenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    mp.setenv("RAY_AIR_NEW_OUTPUT", "0")
    session_dir = ray.init(num_cpus=2, include_dashboard=False,
                           logging_level="WARNING").address_info["session_dir"]
    scfg = SearchConfig(space_file="-", name="mixed", storage=str(storage), tracking_uri="-",
                        num_samples=N, max_concurrent=2, seed=3, sampler=kind,
                        scheduler=SchedulerSpec(kind="fifo"))
    exp = storage / "mixed"
    copies: dict[str, Path] = {}

    def build(path: Path | None = None):
        space = {"x": tune.uniform(0.0, 1.0), "gate": str(gate)}
        if path is not None:
            return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
        return tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric="score", mode="min",
                                        search_alg=search_tuner._searcher(scfg, "score", "min"),
                                        scheduler=search_tuner._scheduler(scfg, STEPS),
                                        num_samples=N),
            run_config=tune.RunConfig(name="mixed", storage_path=str(storage), verbose=0))

    def choreography():
        def at_e():
            s = _snapshot(exp, kind)
            return s and len(s["trials"]) == 2 and s["counter"] == 2 \
                and s["study"] == (2 if kind == "optuna" else 0) \
                and all(step == 1 for _, step in s["trials"].values())

        _wait(at_e, "E")
        shutil.copytree(exp, base / "E")
        copies["E"] = base / "E"
        for k in (0, 1):
            (gate / f"hold-{k}-2").unlink()

        def at_f():
            s = _snapshot(exp, kind)
            slots = _slots(gate)
            if not s or len(s["trials"]) != 4 or s["counter"] != 4 or len(slots) != 4 \
                    or s["study"] != (4 if kind == "optuna" else 0):
                return False
            by_slot = {slots[t]: v for t, v in s["trials"].items() if t in slots}
            return (by_slot.get(0) == ("TERMINATED", 3) and by_slot.get(1) == ("TERMINATED", 3)
                    and by_slot.get(2) == ("RUNNING", None) and by_slot.get(3) == ("RUNNING", 1))

        _wait(at_f, "F")
        shutil.copytree(exp, base / "F")
        copies["F"] = base / "F"
        for hold in ("hold-2-1", "hold-3-2"):
            (gate / hold).unlink()

    watcher = threading.Thread(target=choreography, daemon=True)
    try:
        watcher.start()
        full = build().fit()
        watcher.join(timeout=5)
        assert set(copies) == {"E", "F"}, "the search ended before both moments were copied"
        slots = _slots(gate)
        xs = {r.metrics["trial_id"]: r.config["x"] for r in full}
        assert len(xs) == N and not any(r.error for r in full)
        yield {"copies": copies, "slots": slots, "x": xs, "build": build, "exp": exp,
               "session_dir": session_dir, "kind": kind}
    finally:
        for hold in gate.glob("hold-*"):
            hold.unlink()
        ray.shutdown()
        mp.undo()


def _mixed(states, exp_from: str, gen_from: str, pkl_from: str) -> Path:
    """The experiment folder, in its place, as at ``exp_from`` (trials and the trial list) with
    the generator and searcher files of the given moments; the driver's local staging copy of
    earlier resumes removed, as on a fresh driver."""
    target = states["exp"]
    shutil.rmtree(target)
    shutil.copytree(states["copies"][exp_from], target)
    files = STATE_FILES[states["kind"]]
    for key, source in (("gen", gen_from), ("pkl", pkl_from)):
        if key not in files:
            continue
        for f in target.glob(files[key]):
            f.unlink()
        src = _newest(states["copies"][source], files[key])
        shutil.copy2(src, target / src.name)
    for staging in Path(states["session_dir"], "artifacts").glob(f"*/{target.name}"):
        shutil.rmtree(staging)
    return target


CASES = {
    # trial list newer than the searcher: trials 3 and 4 are adopted (was: KeyError in Optuna)
    "searcher-older": ("F", "E", "E"),
    # searcher newer than the trial list: 3 and 4 run again with their configs (was: 3 of 4)
    "searcher-newer": ("E", "F", "F"),
    # generator and study from different snapshots
    "generator-older": ("F", "E", "F"),
    "study-older": ("F", "F", "E"),
    # all from F: trial 3 snapshotted between its start and its first report
    "consistent-F": ("F", "F", "F"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_from_mixed_snapshots_is_exact(states, case):
    import optuna

    from mona_tune.search import tuner as search_tuner

    exp_from, gen_from, pkl_from = CASES[case]
    if states["kind"] == "random" and gen_from != pkl_from:
        pytest.skip("random search keeps no study")
    path = _mixed(states, exp_from, gen_from, pkl_from)
    tuner = states["build"](path)
    results = tuner.fit()

    # exactly the search's trials, none failed, every step once
    assert len(results) == N, [r.metrics.get("trial_id") for r in results]
    assert not [r.error for r in results if r.error]
    finals = {}
    for r in results:
        steps = list(r.metrics_dataframe["step"])
        assert steps == list(range(1, STEPS + 1)), (r.metrics["trial_id"], steps)
        finals[r.metrics["trial_id"]] = (r.config["x"], r.metrics["score"])
    # the trials the experiment state listed keep their ids (and so their work)
    listed = {t for t, s in states["slots"].items() if s < (2 if exp_from == "E" else 4)}
    assert listed <= set(finals)
    # the configs of the first run's four trials all ran: a lost trial runs again with its own
    assert sorted(x for x, _ in finals.values()) == pytest.approx(sorted(states["x"].values()))

    if states["kind"] == "random":
        # the search's fixed list of (id, config): the same trials as the uninterrupted run
        assert {t: x for t, (x, _) in finals.items()} == pytest.approx(states["x"])
        return
    # Optuna learnt every trial once, with its config and final score
    study = search_tuner.base_searcher(tuner)._ot_study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    told = sorted((t.params["x"], t.value) for t in complete)
    ran = sorted(finals.values())
    assert len(told) == len(ran) == N
    for (x_told, v_told), (x_ran, v_ran) in zip(told, ran):
        assert (x_told, v_told) == (pytest.approx(x_ran), pytest.approx(v_ran))
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,
                                       optuna.trial.TrialState.WAITING))
    assert not running, running


def test_a_cut_short_experiment_state_is_refused(tmp_path):
    """Given a damaged newest experiment state, Tune would restart the search from scratch; the
    driver names the file instead (and an older, whole one is not looked at)."""
    from mona_tune.search.resumable import damaged_state

    exp = tmp_path / "search"
    exp.mkdir()
    assert damaged_state(str(exp)) is None
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": []}')
    assert damaged_state(str(exp)) is None
    newest = exp / "experiment_state-2026-01-02_00-00-00.json"
    newest.write_text('{"trial_data": [["{\\"trial_id')
    assert damaged_state(str(exp)) == str(newest)
    newest.write_text('{"trial_data": []}')
    assert damaged_state(str(exp)) is None
