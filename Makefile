# vpbatch: every target is a one-liner over the project venv (.venv), bootstrapped with uv.
# A fresh machine needs only python3 (>= 3.11) and make: `make demo`, `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vpbatch-installed
# uv from PATH, else a private copy in .venv-tools (works as root and non-root, no sudo).
UV     := $(or $(shell command -v uv 2>/dev/null),.venv-tools/bin/uv)
LAKE   ?= lake
# Demo session (synthetic MNQH6 day written into the lake).
DEMO_SYMBOL  ?= MNQH6
DEMO_DT      ?= 2026-02-06
DEMO_RECORDS ?= 2000000
DEMO_SUMMARY_SQL := SELECT regime, count(*) AS states, round(avg(regime_score), 3) AS avg_score, round(avg(spot_price), 2) AS avg_spot, sum(buy_volume) AS buy_volume, sum(sell_volume) AS sell_volume FROM vp_snapshot GROUP BY regime ORDER BY states DESC

# uv must never download a Python interpreter: only package registries are reachable.
export UV_PYTHON_DOWNLOADS := never

.PHONY: install test test-slow lint demo bench bench-cluster build build-range clean download chromium bench-serve bench-live

install: $(STAMP)

.venv-tools/bin/uv:
	$(PYTHON) -m venv .venv-tools && .venv-tools/bin/python -m pip install --quiet --disable-pip-version-check uv || $(PYTHON) -m pip install --quiet --disable-pip-version-check --target .venv-tools uv

# Installing also warms every cache a first run reads (issue 22), three jobs at once on the 2
# cores: vpbatch.book.precompile compiles the engine's numba kernels, a 1,000-record `vpbatch
# synth` the generator's, and `python -m cli.warm` imports every vpbatch module so that Python
# writes the bytecode of exactly the modules the commands use (instead of compiling every
# installed package: `make test` compiles the rest, the test tools, for itself).
$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV) && $(UV) pip sync --quiet --python $(BIN)/python requirements.lock && $(UV) pip install --quiet --python $(BIN)/python --no-deps -e . && $(BIN)/python -m compileall -q vpbatch cli && { env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m cli.warm & warm=$$!; $(BIN)/vpbatch synth --records 1000 --out $(VENV)/.precompile.mbo.dbn --quiet >/dev/null & synth=$$!; $(BIN)/python -m vpbatch.book.precompile --jobs 1 && wait $$warm && wait $$synth; } && rm -f $(VENV)/.precompile.mbo.dbn && touch $@

# The tests write the bytecode of what they import as they go (also where the machine sets
# PYTHONDONTWRITEBYTECODE=1): each module compiles once, in the first process that imports it,
# instead of in every test subprocess, and nothing else of the venv is compiled. One BLAS/OpenMP
# thread per test process: three pytest workers already share the 2 cores, and idle BLAS
# threads spin (the fit and evaluate tests: 5-8% less CPU).
TEST_PYTHON := env -u PYTHONDONTWRITEBYTECODE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python

# Three pytest workers for the suite on the 2 cores (many tests wait on subprocesses, servers,
# sockets and heartbeats; worksteal hands a waiting worker's queue to the others), then the
# tests that assert on wall-clock rates and latencies (`-m timing`, ~28 s, mostly paced sleeps)
# with mypy (~20 s of CPU on a cold cache) beside them at the lowest CPU priority: it takes only
# the cycles they leave idle (their figures were the same with and without it, 3 runs each).
# The wall-clock run collects only the files that hold them (collecting every file: 5.3 s,
# these: 1.5 s); tests/test_architecture.py fails when a timing test lives in another file.
TIMING_TESTS := tests/serve/test_live_feed.py tests/serve/test_stream.py
test: install chromium
	$(BIN)/ruff check . && $(TEST_PYTHON) -m pytest -q -n 3 --dist worksteal -m "not timing" && { nice -n 19 $(BIN)/mypy & mypy=$$!; $(TEST_PYTHON) -m pytest -q -m timing $(TIMING_TESTS); timing=$$?; wait $$mypy && [ $$timing = 0 ]; }

test-slow: install chromium
	$(TEST_PYTHON) -m pytest -q --slow

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy

demo: install
	$(BIN)/vpbatch synth --symbol $(DEMO_SYMBOL) --dt $(DEMO_DT) --records $(DEMO_RECORDS) --lake $(LAKE) --quiet && $(BIN)/vpbatch build --symbol $(DEMO_SYMBOL) --dt $(DEMO_DT) --start-time 09:30 --end-time 10:30 --tables vp,mbp --lake $(LAKE) --force && $(BIN)/vpbatch verify --symbol $(DEMO_SYMBOL) --dt $(DEMO_DT) --lake $(LAKE) && $(BIN)/vpbatch sql --lake $(LAKE) "$(DEMO_SUMMARY_SQL)" && $(BIN)/vpbatch report --symbol $(DEMO_SYMBOL) --dt $(DEMO_DT) --lake $(LAKE) -o $(LAKE)/report_$(DEMO_SYMBOL)_$(DEMO_DT).html && echo "demo: raw file under $(LAKE)/raw/, grids under $(LAKE)/gold/, report $(LAKE)/report_$(DEMO_SYMBOL)_$(DEMO_DT).html; heatmap:" && $(BIN)/vpbatch plot --symbol $(DEMO_SYMBOL) --dt $(DEMO_DT) --lake $(LAKE) --from 10:00 --to 10:05 -o $(LAKE)/heatmap_$(DEMO_SYMBOL)_$(DEMO_DT).png
	@echo "demo: watch the day live: $(BIN)/vpbatch serve --lake $(LAKE)" && echo "      then open http://127.0.0.1:8002/vacuum-pressure.html?product_type=future_mbo&symbol=$(DEMO_SYMBOL)&dt=$(DEMO_DT)&speed=1&start_time=09:30&throttle_ms=25"

bench: install chromium
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.serve
	$(BIN)/python -m benchmarks.live

bench-live: install
	$(BIN)/python -m benchmarks.live

bench-serve: install chromium
	$(BIN)/python -m benchmarks.serve

# Debian's chromium for the browser tests (vpbatch serve's page); installed when missing and run
# as root, otherwise a loud failure: the browser tests never skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; else echo "make: chromium is not installed and this is not root: run 'sudo apt-get install -y chromium' (the browser tests need it)" >&2; exit 1; fi

.PHONY: bench-evaluate
bench-evaluate: install
	$(BIN)/python -m benchmarks.evaluate

build: install
	$(BIN)/vpbatch build --symbol $(or $(SYMBOL),$(error usage: make build SYMBOL=MNQH6 DT=2026-02-06)) --dt $(or $(DT),$(error usage: make build SYMBOL=MNQH6 DT=2026-02-06)) --lake $(LAKE)

build-range: install
	$(BIN)/vpbatch build --symbol $(or $(SYMBOL),$(error usage: make build-range SYMBOL=MNQH6[,ESH6] START=2026-02-02 END=2026-02-06 [JOBS=2] [SCHEDULER=tcp://host:8786])) --start $(or $(START),$(error usage: make build-range SYMBOL=MNQH6[,ESH6] START=2026-02-02 END=2026-02-06 [JOBS=2] [SCHEDULER=tcp://host:8786])) --end $(or $(END),$(error usage: make build-range SYMBOL=MNQH6[,ESH6] START=2026-02-02 END=2026-02-06 [JOBS=2] [SCHEDULER=tcp://host:8786])) --lake $(LAKE) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(JOBS),--jobs $(JOBS))

bench-cluster: install
	$(BIN)/python -m benchmarks.cluster

download: install
	$(BIN)/vpbatch download --symbol $(or $(SYMBOL),$(error usage: make download SYMBOL=MNQH6 START=2026-02-02 END=2026-02-06 [MAX_COST=25] [DATASET=GLBX.MDP3] [YES=1])) --start $(or $(START),$(error usage: make download SYMBOL=MNQH6 START=2026-02-02 END=2026-02-06 [MAX_COST=25] [DATASET=GLBX.MDP3] [YES=1])) --end $(or $(END),$(START)) --lake $(LAKE) $(if $(MAX_COST),--max-cost $(MAX_COST)) $(if $(DATASET),--dataset $(DATASET)) $(if $(YES),--yes)

clean:
	rm -rf .venv-tools $(STAMP) .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist *.egg-info && find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
