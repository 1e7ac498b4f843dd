"""Search space files: YAML -> ``SearchSpace`` (pydantic) -> Ray Tune param space.

The packaged spaces live in ``mona_tune/search_spaces/<name>.yaml`` (the repository's top-level
``search_spaces/`` is a link to that folder), so they travel with an installed package. ``--space``
takes either a file path or the name of a packaged space (``darcy-paper``).

Every fault in a file is a :class:`MonaError` naming the file, the key and the fault, raised before
Ray starts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mona_tune.config import Distribution, SearchSpace, TrainConfig
from mona_tune.errors import MonaError

PACKAGED_DIR = "search_spaces"


def packaged_spaces() -> dict[str, Path]:
    """Names and paths of the search spaces shipped with the package."""
    root = resources.files("mona_tune") / PACKAGED_DIR
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_space_path(space: str | Path | None, task: str) -> Path:
    """``--space`` as given (a file or a packaged name), or the packaged space of ``task``."""
    if space is not None:
        path = Path(space).expanduser()
        if path.is_file():
            return path.resolve()
        named = packaged_spaces().get(str(space).removesuffix(".yaml"))
        if named is not None and path.suffix in ("", ".yaml") and path.parent == Path("."):
            return named
        raise MonaError(f"--space {space}: no such file (packaged spaces: "
                        f"{', '.join(packaged_spaces())})")
    named = packaged_spaces().get(task)
    if named is None:
        raise MonaError(f"task {task!r} has no packaged search space; pass --space FILE "
                        f"(packaged: {', '.join(packaged_spaces())})")
    return named


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def load_space(path: str | Path, task: str | None = None) -> SearchSpace:
    """Read and validate a search space file. ``task`` (from the command line) must agree with a
    ``fixed.task`` in the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise MonaError(f"{path}: cannot read search space ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise MonaError(f"{path}:{where}: not valid YAML ({problem})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MonaError(f"{path}: a search space is a mapping with 'searched' and 'fixed'; "
                        f"got {type(raw).__name__}")
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        msg = e["msg"].removeprefix("Value error, ")
        key = _loc(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            if key.startswith(("budget.", "scheduler.", "checkpoint.")):
                section = key.split(".")[0]
                known = {"budget": "SearchBudget", "scheduler": "SchedulerSpec",
                         "checkpoint": "CheckpointSpec"}[section]
                from mona_tune import config as _c
                fields = ", ".join(getattr(_c, known).model_fields)
                msg = f"unknown key (known: {fields})"
            elif "." not in key:
                msg = ("unknown key (known: searched, fixed, budget, scheduler, checkpoint, "
                       "description)")
        # model-level messages already start with the key ("searched.lamx: ...")
        if ": " in msg and msg.split(": ", 1)[0].startswith(("searched.", "fixed.")):
            raise MonaError(f"{path}: {msg}") from None
        raise MonaError(f"{path}: {key or 'space'}: {msg}") from None
    _check_against_train_config(space, path, task)
    return space


def _check_against_train_config(space: SearchSpace, path: Path, task: str | None) -> None:
    """Every fixed value and both edges of every distribution must make a valid TrainConfig."""
    if task is not None and "task" in space.fixed and space.fixed["task"] != task:
        raise MonaError(f"{path}: fixed.task: {space.fixed['task']!r} disagrees with --task {task}")
    if "task" in space.searched:
        raise MonaError(f"{path}: searched.task: the task is chosen with --task, not searched")
    base = dict(space.fixed)
    if task is not None:
        base["task"] = task
    _validate(base, path, "fixed")
    for key, dist in space.searched.items():
        for value in dist.extremes():
            _validate({**base, key: value}, path, f"searched.{key}", focus=key)


def _validate(values: dict, path: Path, where: str, focus: str | None = None) -> None:
    try:
        TrainConfig(**values)
    except ValidationError as err:
        e = err.errors()[0]
        field = _loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        key = where if focus else (f"fixed.{field}" if field else "fixed")
        shown = values.get(focus) if focus else values.get(field)
        value = f" (value {shown!r})" if shown is not None else ""
        raise MonaError(f"{path}: {key}: {msg}{value}") from None


def to_tune_domain(dist: Distribution):
    """The Ray Tune domain of a distribution (``tune.uniform`` and friends)."""
    from ray import tune

    if dist.kind == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.kind == "quniform":
        return tune.quniform(dist.low, dist.high, dist.q)
    if dist.kind == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.kind == "randint":
        return tune.randint(int(dist.low), int(dist.high))
    if dist.kind == "lograndint":
        return tune.lograndint(int(dist.low), int(dist.high))
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    raise AssertionError(dist.kind)


def to_param_space(space: SearchSpace, task: str,
                   extra_fixed: dict[str, Any] | None = None) -> dict:
    """The Tuner's ``param_space``: searched fields as Tune domains, fixed ones as values.

    ``extra_fixed`` (from command-line flags such as ``--source-model``) overrides the file's
    fixed values and is validated the same way.
    """
    fixed = {**space.fixed, **(extra_fixed or {}), "task": task}
    clash = sorted(set(extra_fixed or {}) & set(space.searched))
    if clash:
        raise MonaError(f"--{clash[0].replace('_', '-')}: the space searches {clash[0]}; "
                        "a field is either searched or fixed")
    out: dict[str, Any] = dict(fixed)
    for key, dist in space.searched.items():
        out[key] = to_tune_domain(dist)
    return out


def dump_space(space: SearchSpace) -> str:
    """The space as YAML in the file's own shape (logged as an artifact of the parent run)."""
    searched = {}
    for key, d in space.searched.items():
        if d.kind == "choice":
            searched[key] = {"choice": list(d.values or [])}
        elif d.kind == "quniform":
            searched[key] = {d.kind: [d.low, d.high, d.q]}
        elif d.kind in ("randint", "lograndint"):
            searched[key] = {d.kind: [int(d.low), int(d.high)]}
        else:
            searched[key] = {d.kind: [d.low, d.high]}
    doc = {
        "searched": searched,
        "fixed": dict(space.fixed),
        "budget": space.budget.model_dump(exclude_none=True),
        "scheduler": space.scheduler.model_dump(exclude_none=True),
        "checkpoint": space.checkpoint.model_dump(),
    }
    if space.description:
        doc = {"description": space.description, **doc}
    return yaml.safe_dump(doc, sort_keys=False)
