# Set-up and test entry points. Every target installs what it needs on a fresh machine.
#   make run    set up, then start the service (SQLite, in-process bus, example packs, API on :8080)
#   make demo   set up, then run every example sensor once with `attune-host sensor run`
#   make test   set up, then run every test (Rust end-to-end, Python SDK, JS SDK, console in Chromium)
#   make bench  set up, then run the sandbox and service benchmarks (release build)
#   make fuzz   run every fuzz target for FUZZ_SECONDS (default 15) each (scripts/fuzz-smoke.sh)

SHELL := /bin/bash
VENV := .venv
PY_SDK := $(VENV)/bin/attune-sensor
JS_SDK := sdk-js/node_modules/.package-lock.json
JS_CLI := node sdk-js/bin/attune-sensor.js
CONSOLE_TESTS := tests/console/node_modules/.package-lock.json
WIT := wit/sensor.wit
# Compiled artifacts shared by every test process and run.
export ATTUNE_CACHE_DIR ?= $(CURDIR)/target/attune-cache
export ATTUNE_RUNTIMES_DIR ?= $(CURDIR)/build/runtimes

PY_SOURCES := $(shell find sdk-python/attune_sensor -type f \( -name '*.py' -o -name '*.tmpl' \) 2>/dev/null) sdk-python/pyproject.toml
JS_SOURCES := $(shell find sdk-js -maxdepth 3 \( -name '*.js' -o -name '*.json' \) -not -path '*/node_modules/*' -not -path '*/test/*' 2>/dev/null)

RUNTIMES := build/runtimes/python.wasm build/runtimes/javascript.wasm
COMPONENTS := build/components/py_compiled_dep.wasm build/components/js_bundled_dep.wasm build/components/other_world.wasm

.PHONY: setup components run demo test test-rust test-sdk test-console bench fuzz
setup: components

components: $(RUNTIMES) $(COMPONENTS)

$(PY_SDK): $(PY_SOURCES) $(WIT)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade ./sdk-python
	touch $@

$(JS_SDK): sdk-js/package.json sdk-js/package-lock.json
	npm ci --prefix sdk-js --no-audit --no-fund
	touch $@

build/runtimes/python.wasm: $(PY_SDK)
	@mkdir -p $(@D)
	$(PY_SDK) build-runtime -o $@

build/runtimes/javascript.wasm: $(JS_SDK) $(JS_SOURCES) $(WIT)
	@mkdir -p $(@D)
	$(JS_CLI) build-runtime -o $@

build/components/py_compiled_dep.wasm: $(PY_SDK) $(wildcard tests/fixtures/python/compiled_dep/*.py tests/fixtures/python/compiled_dep/*/*.py)
	@mkdir -p $(@D)
	$(PY_SDK) build tests/fixtures/python/compiled_dep/sensor.py -o $@

build/components/js_bundled_dep.wasm: $(JS_SDK) $(JS_SOURCES) $(shell find tests/fixtures/js/bundled_dep -name '*.js' 2>/dev/null)
	@mkdir -p $(@D)
	$(JS_CLI) build tests/fixtures/js/bundled_dep/sensor.js -o $@

build/components/other_world.wasm: $(JS_SDK) $(wildcard tests/fixtures/js/other_world/*)
	@mkdir -p $(@D)
	sdk-js/node_modules/.bin/componentize-qjs --wit tests/fixtures/js/other_world/other.wit -n thing --js tests/fixtures/js/other_world/thing.js --sync -o $@

# The language runtimes only (not the test fixtures); the `quick` profile (Cargo.toml) builds in
# about half the release time.
run: $(RUNTIMES)
	cargo run --profile quick --bin attune-host -- serve

demo: components
	cargo build --release --bin attune-host
	scripts/demo.sh

test: components test-sdk test-rust test-console

test-sdk: $(PY_SDK) $(JS_SDK)
	$(VENV)/bin/python -m unittest discover sdk-python/tests
	npm test --prefix sdk-js

test-rust: components
	cargo test --workspace

$(CONSOLE_TESTS): tests/console/package.json tests/console/package-lock.json
	npm ci --prefix tests/console --no-audit --no-fund
	touch $@

# The operator console in headless Chromium (Debian's /usr/bin/chromium) against a real serve.
test-console: components $(CONSOLE_TESTS)
	cargo build -p attune-host --bin attune-host
	npm test --prefix tests/console

bench: components
	cargo bench -p attune-host --bench sandbox
	cargo bench -p attune-host --bench service

FUZZ_SECONDS ?= 15
fuzz:
	scripts/fuzz-smoke.sh $(FUZZ_SECONDS)
