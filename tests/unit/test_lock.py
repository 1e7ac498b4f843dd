"""One lock of the tested versions: every install path of the project's own (make install, .ci/run,
the image, ray up, Slurm) installs locks/*.txt with --require-hashes; this environment is the
lock; the lock satisfies pyproject.toml's ranges (what users who install the package get)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from locks import DEV, ROOT, RUNTIME, pinned_here, read_lock
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_every_pin_carries_its_hashes():
    for path in (DEV, RUNTIME):
        pins = read_lock(path)
        assert len(pins) > 100, f"{path}: not read as a lock"
        assert not [p.name for p in pins if not p.hashes], f"{path}: pins without hashes"
        # only exact pins: a line pip would resolve by itself would defeat --require-hashes
        loose = [ln for ln in path.read_text().splitlines()
                 if ln and not ln[0].isspace() and not ln.startswith("#") and "==" not in ln]
        assert not loose, loose


def test_the_runtime_lock_is_the_dev_lock_s_versions():
    dev = {(p.name, p.marker): p for p in read_lock(DEV)}
    for pin in read_lock(RUNTIME):
        assert (pin.name, pin.marker) in dev, f"{pin.name} is in the runtime lock only"
        assert dev[pin.name, pin.marker].version == pin.version, pin.name
        assert set(pin.hashes) <= set(dev[pin.name, pin.marker].hashes), pin.name
    runtime = {p.name for p in read_lock(RUNTIME)}
    assert {"ray", "torch", "mlflow", "psycopg", "boto3", "pot", "transformers"} <= runtime
    assert not {"pytest", "playwright", "moto", "mutmut"} & runtime, "test tools in the image"


def test_the_lock_satisfies_pyproject_s_ranges():
    pins = read_lock(DEV)
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        if name == "mona-tune":
            continue  # [all]: the other extras
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # mkl: linux x86_64 only
        versions = [p.version for p in pins if p.name == name]
        assert versions, f"{req} is not in the lock: run make lock"
        for v in versions:
            assert req.specifier.contains(Version(v), prereleases=True), f"{name}=={v} vs {req}"


def test_this_environment_is_the_lock():
    """What the suite tests is what the lock names (make install; a stale .venv fails here)."""
    wrong = {}
    for name, version in pinned_here(DEV).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if Version(installed).public != Version(version).public:
            wrong[name] = (version, installed)
    assert not wrong, f"installed packages differ from locks/dev.txt (locked, installed): {wrong}"


def _installs(text: str) -> list[str]:
    """The pip installs a recipe runs (comments aside), a Makefile's simple variables expanded."""
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    for name, value in re.findall(r"^(\w+)\s*:?=\s*(.*?)\s*$", text, re.MULTILINE):
        text = text.replace(f"$({name})", value)
    return [m.group(0) for m in re.finditer(r"pip install[^\n&;]*", text.replace("\\\n", " "))]


def test_every_install_path_uses_the_lock():
    paths = {"Makefile": "locks/dev.txt", "docker/Dockerfile": "runtime.txt",
             "cluster/ray-onprem.yaml": "locks/runtime.txt"}
    for rel, lock in paths.items():
        installs = _installs((ROOT / rel).read_text())
        assert installs, f"{rel}: installs nothing"
        hashed = [c for c in installs if "--require-hashes" in c and lock in c]
        assert hashed, f"{rel}: no install from {lock} with --require-hashes"
        # every other install is the package itself, without dependencies (or the lock tool)
        for cmd in installs:
            assert cmd in hashed or "--no-deps" in cmd or "uv==" in cmd, f"{rel}: {cmd}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    slurm = (ROOT / "cluster" / "slurm-ray.sbatch").read_text()
    assert "--require-hashes -r locks/runtime.txt" in slurm
