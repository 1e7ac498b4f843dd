"""Run mutants outside mutmut: for mutants whose tests need Ray, which mutmut cannot run.

mutmut runs each mutant in a child forked from its own process; a Ray started in such a child
crashes (reported as "segfault"), and the statistics run records no test for functions reached
only while Ray runs ("no tests"). This script applies each named mutant's diff (``mutmut show``)
to a copy of the package and its tests and runs the given fast tests there in a fresh pytest
process (the copy is pytest's root, and first on ``PYTHONPATH`` for Ray's workers). A mutant is killed when the tests fail.

    python benchmarks/mutants_by_hand.py --tests tests/unit/cluster NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "baseline"  # the package unchanged: its tests must pass, or no verdict means anything
PYTHON = sys.executable


def mutant_diff(name: str) -> str:
    out = subprocess.run([str(ROOT / ".venv/bin/mutmut"), "show", name], cwd=ROOT,
                         capture_output=True, text=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("# "))


def run_mutant(name: str, tests: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        for part in ("mona_tune", "tests"):
            shutil.copytree(ROOT / part, tree / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", tree)
        diff = mutant_diff(name) if name != BASELINE else ""
        if name != BASELINE and not diff.strip():
            return "unknown to mutmut"
        patch = subprocess.run(["patch", "-p0", "--silent"], cwd=tree, input=diff,
                               text=True, capture_output=True)
        if patch.returncode:
            return f"not applied ({patch.stdout.strip() or patch.stderr.strip()})"
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        try:
            r = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-m", "not slow",
                                "-p", "no:cacheprovider", *tests], cwd=tree, env=env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed (timeout)"
        return "killed" if r.returncode else "survived"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--tests", nargs="+", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if run_mutant(BASELINE, args.tests, args.timeout) != "survived":
        print(f"the tests fail on the unchanged package: {' '.join(args.tests)}")
        return 1
    verdicts = []
    for name in args.names:
        verdicts.append(run_mutant(name, args.tests, args.timeout))
        print(f"{name}: {verdicts[-1]}", flush=True)
    checked = [v for v in verdicts if v.startswith(("killed", "survived"))]
    print(f"{sum(v.startswith('killed') for v in checked)} of {len(checked)} checked killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
