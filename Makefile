# The two commands: `make demo` (the main job) and `make test` (the tests). Each does its own setup
# on a fresh machine: a .venv with the project and its test tools installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint lint-imports unit sim-smoke proofs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    echo "python3 -m venv is missing; installing python3-venv with apt"; \
	    apt-get update -qq && apt-get install -y -qq python3-venv python3-pip && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/smr demo

test: $(STAMP) native-check lint lint-imports unit sim-smoke proofs

lint: $(STAMP)
	$(BIN)/ruff check .

# The native crate (native/, built into the venv as smr._native): rebuild the extension when its
# sources changed since the install (an editable install does not rebuild it by itself), then
# rustfmt, clippy with and without the Python bindings, cargo test (unit and property tests, and a
# proptest run of the fuzz target's body), and 20 s of libFuzzer on the peer-write decoder (stable
# toolchain, no sanitizer: see native/README.md).
native-check: $(STAMP)
	@if [ -n "$$(find native/src native/Cargo.toml native/Cargo.lock -newer $(STAMP))" ]; then \
	    echo "native/ changed since the install: rebuilding smr._native"; \
	    $(BIN)/python -m pip install -q --no-deps -e . && touch $(STAMP); fi
	cd native && cargo fmt --check && cd fuzz && cargo fmt --check
	cd native && cargo clippy --locked --all-targets -- -D warnings
	cd native && PYO3_PYTHON=$(abspath $(BIN))/python cargo clippy --locked --all-targets --features python -- -D warnings
	cd native && cargo test --locked -q
	@cargo fuzz --version >/dev/null 2>&1 || cargo install -q --locked cargo-fuzz@0.13.2
	cd native/fuzz && mkdir -p target && cargo fuzz run -s none apply_write -- -max_total_time=20 > target/fuzz.log 2>&1 \
	    || { tail -40 target/fuzz.log; exit 1; }; tail -1 target/fuzz.log

# import-linter reads packages from the file system, and log/, statemachines/ and cli/ are mapped
# into `smr` only when installed: lint a copy laid out as the installed package.
lint-imports: $(STAMP)
	@rm -rf build/lint && mkdir -p build/lint
	@cp -r smr build/lint/ && cp -r log build/lint/smr/log && cp -r statemachines build/lint/smr/statemachines && cp -r cli build/lint/smr/cli
	cd build/lint && PYTHONPATH=. ../../$(BIN)/lint-imports --config ../../pyproject.toml

unit: $(STAMP)
	$(BIN)/python -m pytest

# A few hundred simulated runs, each seed a different schedule of faults; the long runs
# (thousands of seeds) and their figures are in docs/performance.md.
sim-smoke: $(STAMP)
	$(BIN)/smr sim -j 2 --nodes 3 --seeds 1-500 --faults delay,partition
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-20 --workload kv --faults delay
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-10 --workload kv --faults crash,restart,partition,join,delay,total
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-10 --workload bank --faults crash,restart,partition,join,leave,delay
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-6 --workload bytes --faults delay,partition,crash,restart,join --block-bytes 512

# TLC model-checks every spec in proofs/ and must refute every deliberately broken variant.
proofs: $(STAMP)
	@command -v java >/dev/null 2>&1 || { \
	    echo "java is missing; installing default-jre-headless with apt"; \
	    apt-get update -qq && apt-get install -y -qq default-jre-headless; }
	$(BIN)/python proofs/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .hypothesis
