# Two commands on a fresh machine: `make search` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: search test test-unit bench install clean mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

search: $(STAMP)
	$(BIN)/mona-tune search --task darcy

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

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
