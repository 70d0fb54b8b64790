# The two commands: `make demo` (the main job) and `make test` (the tests). Each does its own setup
# on a fresh machine: a .venv with the project, its test tools and its docs tools installed.
# `make docs` builds the documentation site into site/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# The stages `make test` runs, in order; each is also a target of its own (`make unit`).
# tools/stages.py runs them, streams their output and ends with the total, `N passed, M failed`.
# A new stage: a target below, and its name here.
TEST_STAGES := lint lint-imports typecheck native-check docs unit sim-smoke chaos proofs

.PHONY: demo test docs bench-deps $(TEST_STAGES) clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    echo "python3 -m venv is missing; installing python3-venv with apt"; \
	    apt-get update -qq && apt-get install -y -qq python3-venv python3-pip && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools says, on every editable install of a package-dir mapping like ours, that folders
	@# named like the package may shadow it: information, not a problem; keep the output quiet
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[test,docs]'
	@touch $(STAMP)

# The external baselines of `smr bench compare --systems etcd,zookeeper`: etcd and ZooKeeper from
# Debian's packages with apt (as root, or through sudo), where they are missing, and their Python
# client libraries, the `baselines` extra of pyproject.toml, into the venv (without reinstalling
# the project, which would rebuild smr._native).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-deps: $(STAMP)
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	{ command -v zkServer.sh >/dev/null || [ -x /usr/share/zookeeper/bin/zkServer.sh ]; } \
	    || missing="$$missing zookeeper"; \
	if [ -n "$$missing" ]; then \
	    echo "installing with apt:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        $(SUDO) apt-get install -y -qq $$missing; \
	else echo "etcd, etcdctl and zkServer.sh are installed"; fi
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['baselines']))" \
	    | xargs $(BIN)/python -m pip install -q
	@etcd --version | head -1; dpkg-query -W -f='zookeeper $${Version}\n' zookeeper 2>/dev/null || true

demo: $(STAMP)
	$(BIN)/smr demo

test: $(STAMP)
	@MAKE="$(MAKE)" $(BIN)/python tools/stages.py $(TEST_STAGES)

# log/, statemachines/ and cli/ are mapped into `smr` only when installed; tools that read the
# package from the file system (import-linter, the API reference's griffe) get a copy laid out
# as installed: $(call INSTALLED_LAYOUT,DIR) makes DIR/smr.
INSTALLED_LAYOUT = rm -rf $(1) && mkdir -p $(1) && cp -r smr $(1)/ && cp -r log $(1)/smr/log \
	&& cp -r statemachines $(1)/smr/statemachines && cp -r cli $(1)/smr/cli

# The site, into site/: warnings are errors, so a broken reference, link or anchor fails `make
# test`. Not --quiet: it hides the warnings from --strict, which then passes. The API reference
# reads the docstrings from build/api (mkdocs.yml).
docs: $(STAMP)
	@$(call INSTALLED_LAYOUT,build/api)
	$(BIN)/mkdocs build --strict

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
	cd native/fuzz && mkdir -p target && for t in apply_write take_slots; do \
	    cargo fuzz run -s none $$t -- -max_total_time=15 > target/fuzz-$$t.log 2>&1 \
	        || { tail -40 target/fuzz-$$t.log; exit 1; }; tail -1 target/fuzz-$$t.log; done

# import-linter reads packages from the file system: lint a copy laid out as installed.
lint-imports: $(STAMP)
	@$(call INSTALLED_LAYOUT,build/lint)
	cd build/lint && PYTHONPATH=. ../../$(BIN)/lint-imports --no-logo ../../pyproject.toml

# mypy over the core, the executor, the runtime, the public API and smr.check ([tool.mypy] in
# pyproject), on a copy laid out as installed, like lint-imports.
typecheck: $(STAMP)
	@$(call INSTALLED_LAYOUT,build/typecheck)
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml

# iptables for the partitions of the real-process tests (unit) and of smr chaos: installed with
# apt where it is missing, so that neither skips them on a fresh machine
IPTABLES := command -v iptables >/dev/null 2>&1 || { \
	    echo "iptables is missing; installing it with apt"; \
	    apt-get update -qq && apt-get install -y -qq iptables; }

unit: $(STAMP)
	@$(IPTABLES)
	$(BIN)/python -m pytest

# A few hundred simulated runs, each seed a different schedule of faults; the long runs
# (thousands of seeds) and their figures are in docs/performance.md.
sim-smoke: $(STAMP)
	$(BIN)/smr sim -j 2 --nodes 3 --seeds 1-500 --faults delay,partition
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-20 --workload kv --faults delay
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-10 --workload kv --faults crash,restart,partition,join,delay,total
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-10 --workload bank --faults crash,restart,partition,join,leave,delay
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-10 --workload kv --faults crash,restart,partition,delay,total,reconfigure
	$(BIN)/smr sim -j 2 --protocol multipaxos --nodes 3 --seeds 1-20 --faults crash,restart,partition,delay,total
	$(BIN)/smr sim -j 2 --protocol multipaxos --nodes 3 --seeds 1-10 --workload bank --faults crash,restart,partition,delay,total
	$(BIN)/smr sim -j 2 --nodes 5 --seeds 1-6 --workload bytes --faults delay,partition,crash,restart,join --block-bytes 512

# Real clusters under faults, their clients' histories checked for linearizability (smr chaos,
# docs/reliability.md): tcp with every fault (partitions need iptables, installed with apt where
# it is missing; disk faults mount a tmpfs per member and build an LD_PRELOAD shim with cc; seed
# 168 draws all six kinds, the partition a bridge), shm with the faults it has (no network to cut).
# Each run takes at most 60 s.
chaos: $(STAMP)
	@$(IPTABLES)
	$(BIN)/smr chaos --seed 168 --duration-s 30 --transport tcp --faults kill,pause,partition,restart-all,disk-full,fsync-error --out build/chaos/tcp
	$(BIN)/smr chaos --seed 1 --duration-s 30 --transport shm --faults kill,pause,restart-all --out build/chaos/shm

# TLC model-checks every spec in proofs/ and must refute every deliberately broken variant.
proofs: $(STAMP)
	@command -v java >/dev/null 2>&1 || { \
	    echo "java is missing; installing default-jre-headless with apt"; \
	    apt-get update -qq && apt-get install -y -qq default-jre-headless; }
	$(BIN)/python proofs/run.py

clean:
	rm -rf $(VENV) build site .pytest_cache .ruff_cache .hypothesis
