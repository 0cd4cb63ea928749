# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-paper-tables clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# a current pip first: the venv's own (23.2 with Python 3.11) took about 6 min for the install below where
	@# the upgraded one took about 4.5 (one run each, session 19)
	$(BIN)/pip install -q --upgrade pip
	@# PYTHONWARNINGS: setuptools' build backend prints a 10-line notice for every editable install
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[dev]'
	@# the project's own bytecode now: where PYTHONDONTWRITEBYTECODE is set, every process (each Ray worker,
	@# each CLI run) would otherwise compile the modules it imports from source
	$(BIN)/python -m compileall -q components pipelines vidpeft >/dev/null
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vidpeft demo

# The paper-table campaigns end to end (tests marked paper_tables) take over an hour on 2 cores:
# `make test-paper-tables` runs them; `make test` (CI) runs everything else, in two steps: the suite in two
# lanes, then the test that starts a Ray cluster of its own (marker ray_cluster), alone: its two nodes and
# their job need the machine to themselves (beside the other lane on 2 cores it took 941 s, alone 340 s).
# Both steps always run; `make test` fails when either does.
PYTEST_ARGS ?=
# the second step collects only this folder (14 s less than the whole suite); tests/conftest.py refuses a
# ray_cluster test anywhere else
CLUSTER_TESTS := tests/pipelines/runtime
test: $(STAMP)
	@status=0; \
	$(BIN)/pytest -q -m "not paper_tables and not ray_cluster" -n 2 --dist loadgroup --durations=10 $(PYTEST_ARGS) \
		|| status=1; \
	$(BIN)/pytest -q -m "ray_cluster and not paper_tables" --durations=3 $(CLUSTER_TESTS) $(PYTEST_ARGS) || status=1; \
	exit $$status

test-paper-tables: $(STAMP)
	$(BIN)/pytest -q -m paper_tables

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e" -n 2 --dist loadgroup

clean:
	rm -rf runs demo_data mlflow.db mlartifacts demo_summary.json demo_curves.png preds.parquet

# Benchmarks with small settings (a few minutes on 2 cores); results go to benchmarks/results/quick/
# so the full-size figures quoted in the README stay. Full-size commands: benchmarks/README.md.
.PHONY: bench
BENCH_OUT ?= benchmarks/results/quick
bench: $(STAMP)
	$(BIN)/python benchmarks/train_step.py --cases full,mhva_pt,full_clip,m2clip --frames 4 --steps 2 --repeats 1 --out $(BENCH_OUT)/train_step.json
	$(BIN)/python benchmarks/train_step_paired.py --cases m2clip --frames 4 --pairs 4 --out $(BENCH_OUT)/train_step_paired.json
	$(BIN)/python benchmarks/mfu.py --cases full --frames 4 --steps 2 --repeats 1 --out $(BENCH_OUT)/mfu.json
	$(BIN)/python benchmarks/ray_overhead.py --repeats 1 --steps 20 --out $(BENCH_OUT)/ray_overhead.json
	$(BIN)/python benchmarks/ingest_throughput.py --repeats 1 --epochs 1 --out $(BENCH_OUT)/ingest_throughput.json
	$(BIN)/python benchmarks/optimisations.py --repeats 2 --text-classes 20 --out $(BENCH_OUT)/optimisations.json
