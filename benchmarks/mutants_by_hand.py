"""Run mutants outside mutmut: for mutants whose tests need Ray, which mutmut cannot run.

mutmut runs each mutant in a child forked from its own process; a Ray started in such a child
crashes (reported as "segfault"), and the statistics run records no test for functions reached
only while Ray runs ("no tests"). This script applies each named mutant's diff (``mutmut show``)
to a copy of the package and runs the given fast tests in a fresh pytest process with that copy
first on ``PYTHONPATH`` (Ray's workers inherit it). A mutant is killed when the tests fail.

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
PYTHON = sys.executable


def mutant_diff(name: str) -> str:
    out = subprocess.run([str(ROOT / ".venv/bin/mutmut"), "show", name], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("# "))


def run_mutant(name: str, tests: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        shutil.copytree(ROOT / "mona_tune", tree / "mona_tune")
        patch = subprocess.run(["patch", "-p0", "--silent"], cwd=tree, input=mutant_diff(name),
                               text=True, capture_output=True)
        if patch.returncode:
            return f"not applied ({patch.stdout.strip() or patch.stderr.strip()})"
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        try:
            r = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-m", "not slow",
                                "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env,
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
    survived = 0
    for name in args.names:
        verdict = run_mutant(name, args.tests, args.timeout)
        survived += verdict == "survived"
        print(f"{name}: {verdict}", flush=True)
    print(f"{len(args.names) - survived} of {len(args.names)} killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
