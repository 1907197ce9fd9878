# decentralml — `make demo` and `make test` work from a fresh clone with Python 3.11 and Node 20.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Keep Prefect and Keras quiet, offline and inside the project.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export KERAS_HOME := $(CURDIR)/.keras
export DECENTRALML_DATA_DIR ?= $(CURDIR)/.cache/data
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_LEVEL ?= WARNING
export TF_CPP_MIN_LOG_LEVEL := 2

PYTEST_ARGS ?=
LEARNING_ARGS ?=
# pytest-xdist processes for `make test` (0: one process). Each test file runs whole on one
# worker (--dist loadfile): module-scoped servers start once and tests keep their file's order.
TEST_WORKERS ?= 2

.PHONY: venv demo demo-chain test test-fast lint chain chain-stop chain-deps bench ui-images clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

chain-deps: chain/node_modules/.package-lock.json

chain/node_modules/.package-lock.json: chain/package.json chain/package-lock.json
	cd chain && npm ci --no-audit --no-fund

demo: venv
	@mkdir -p .decentralml
	$(BIN)/decentralml demo --config configs/mnist.yaml --summary-json .decentralml/summary.json

test: venv chain-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not integration" \
	  $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	@! grep -rnE '^(<<<<<<< |>>>>>>> )' decentralml flows tasks tests docs configs assets bench \
	  README.md prefect.yaml pyproject.toml Makefile || (echo 'error: merge conflict markers above' && false)

chain: venv chain-deps
	bash chain/start.sh

chain-stop:
	bash chain/stop.sh

# The demo with the marketplace on a local Substrate dev chain (started and stopped here).
demo-chain: venv chain-deps
	@mkdir -p .decentralml
	bash chain/start.sh
	$(BIN)/decentralml demo --config configs/mnist-substrate.yaml \
	  --summary-json .decentralml/summary-substrate.json; status=$$?; \
	  bash chain/stop.sh; exit $$status

bench: venv chain-deps
	$(BIN)/python bench/bench_aggregation.py
	$(BIN)/python bench/bench_chain.py
	$(BIN)/python bench/bench_chain_round.py
	$(BIN)/python bench/bench_round_overhead.py
	$(BIN)/python bench/bench_flower.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_cost_fit.py --runners threads,dask
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_idle_round.py
	$(BIN)/python bench/bench_agent_start.py
	$(BIN)/python bench/bench_learning.py $(LEARNING_ARGS)
	$(BIN)/python bench/bench_attacked_learning.py
	$(BIN)/python bench/bench_attacks.py
	$(BIN)/python bench/bench_value.py
	$(BIN)/python bench/bench_value_cost.py
	$(BIN)/python bench/bench_backdoor_defences.py
	$(BIN)/python bench/bench_stress.py --runs 30
	$(BIN)/python bench/bench_stress.py --sigterm

# Learning quality alone (hours for the whole sweep on 2 cores; docs/benchmarks.md says what
# was run): e.g. make bench-learning LEARNING_ARGS="--only iid/".
.PHONY: bench-learning
bench-learning: venv
	$(BIN)/python bench/bench_learning.py $(LEARNING_ARGS)

# Screenshots of the Prefect UI after a short demo (needs Debian's chromium): docs/images/.
ui-images: venv
	$(BIN)/python docs/render_ui.py --out docs/images

clean:
	rm -rf .decentralml .prefect .keras .pytest_cache
