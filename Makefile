# Two commands on a fresh machine: `make search` and `make test`. Both create .venv when missing
# and install into it exactly what locks/dev.txt names (versions and hashes): a new upstream
# release never changes what a fresh clone installs. `make lock` refreshes the lock, on purpose.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := locks/dev.txt
UV_VERSION := 0.13.10

.PHONY: search test test-unit drift bench install lock clean mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the lock holds pip, setuptools and wheel too: the package itself installs without a build
# environment fetched from PyPI that day
$(STAMP): $(BIN)/python $(LOCK) pyproject.toml
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# locks/dev.txt: every extra (make install, .ci/run); locks/runtime.txt: the package with [all]
# (every feature, no test tools) at the same versions (the image, ray up, Slurm). Universal:
# markers, not this machine, decide what each platform installs. Existing pins are kept unless
# their range no longer admits them: `make lock LOCK_UPGRADE=--upgrade` takes the newest.
LOCK_UPGRADE ?=
LOCK_ARGS := --universal --python-version 3.11 --generate-hashes --quiet $(LOCK_UPGRADE)
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml locks/tools.in --all-extras $(LOCK_ARGS) -o locks/dev.txt
	$(BIN)/uv pip compile pyproject.toml locks/tools.in --extra all \
	  -c locks/dev.txt $(LOCK_ARGS) -o locks/runtime.txt

search: $(STAMP)
	$(BIN)/mona-tune search --task darcy

test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	$(MAKE) drift

# the tests that compare trained numbers with constants (marked `drift`), once more under another
# kernel choice of torch's: a CPU of another kind rounds differently, and this shows it first.
# `default` (no vector instructions) runs on every CPU; avx512 on a CPU without it dies of SIGILL.
DRIFT_CAPABILITY ?= default
drift: $(STAMP)
	@ATEN_CPU_CAPABILITY=$(DRIFT_CAPABILITY) $(BIN)/python -c "from mona_tune.models.shipped \
	  import platform_info as p; i = p(); print('drift tests on', i['cpu'], 'with torch kernels', \
	  i['cpu_capability'], '(ATEN_CPU_CAPABILITY=$(DRIFT_CAPABILITY))')"
	ATEN_CPU_CAPABILITY=$(DRIFT_CAPABILITY) $(BIN)/python -m pytest -q -m drift -p no:cacheprovider tests

# the fast unit tests alone (tests/unit, about two minutes); `make test` runs them and tests/system
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests/unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Mutation testing (mutmut, configured in pyproject.toml) of the core modules against the fast
# tests; prints the score per module (benchmarks/MUTATION.md). One module: MUTATE='mona_tune.train.losses*'
# MUTATION_SAMPLE=N: a seeded random sample of N mutants per module (0: all of them; hours).
MUTATE ?= mona_tune.train.losses* mona_tune.train.stage1* mona_tune.tasks.generate* \
          mona_tune.tasks.darcy* mona_tune.search.results.x_trial_outcome* \
          mona_tune.search.results.x_reconcile_runs* mona_tune.search.trial* \
          mona_tune.tracking.best* mona_tune.tracking.mlflow_runs* mona_tune.train.trainer* \
          mona_tune.cluster.* mona_tune.report.*
MUTATION_SAMPLE ?= 0
MUTATION_JOBS ?= 2
MUTANTS := .mutmut-sample
# source models and an empty MLflow store kept across the mutants' pytest sessions (tests/conftest.py)
MUTATION_ENV := MONA_TUNE_TEST_SHARED_CACHE='$(CURDIR)/.mutmut-test-cache'
mutation: $(STAMP)
	$(MUTATION_ENV) $(BIN)/python benchmarks/mutation_sample.py \
	  --per-module $(MUTATION_SAMPLE) $(foreach m,$(MUTATE),'$(m)') > $(MUTANTS)
	$(MUTATION_ENV) nice -n 5 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $$(cat $(MUTANTS))
	$(BIN)/python benchmarks/mutation_score.py --names $(MUTANTS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
