# Switchyard: `make run` starts it (with a Redis), `make test` runs the whole suite.
# Builds go to a cache outside the checkout so clean clones reuse compiled dependencies.
CARGO_TARGET_DIR ?= $(HOME)/.cache/switchyard-target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release/switchyard

.PHONY: run test lint setup build bench bench-peers fuzz

setup:
	@scripts/setup.sh

build: setup
	cargo build --release

## Start Switchyard on this machine: API, workers and scheduler in one process. Without
## SWITCHYARD_REDIS_URL it uses a Redis at 127.0.0.1:6379, or starts a private one under ./data/redis.
run: build
	$(BIN) serve

## The whole test suite, against real Redis servers the tests start themselves; the dashboard is
## also tested in a headless Chromium, /metrics and Prometheus's files with promtool (fetched on
## first use), docker-compose.yml with docker-compose, the systemd unit with systemd-analyze and the
## OpenAPI document with openapi-spec-validator (into a venv on first use). The
## integration suite runs again on a one-master Redis Cluster (a key outside a script's slot
## fails there), its engine, ingestion, ordering and conversation parts on three masters, and
## the whole conversation flow over six partitions of three masters.
test:
	@scripts/setup.sh chromium docker-compose systemd-analyze python3-venv
	@# a thousand live listeners in one test: two thousand sockets
	ulimit -n $$(ulimit -Hn) 2>/dev/null || true; cargo test --all-targets
	ulimit -n $$(ulimit -Hn) 2>/dev/null || true; SWITCHYARD_TEST_CLUSTER=1 cargo test --test it
	SWITCHYARD_TEST_CLUSTER=3 cargo test --test it -- engine:: ordering:: webhooks:: webhook_ids:: flow:: conversations:: delivery:: schedule::
	SWITCHYARD_TEST_CLUSTER=3 SWITCHYARD_TEST_PARTITIONS=6 cargo test --test it -- flow:: webhook_ids:: schedule::

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

## Switchyard's benchmarks (see BENCHMARKS.md), then the peers' on the same machine and Redis.
bench: build
	@scripts/setup.sh wrk
	$(BIN) bench drain --tasks 200000 --concurrency 256
	$(BIN) bench latency --rate 5000 --seconds 10
	$(BIN) bench ingest --seconds 10
	$(BIN) bench ingest --seconds 10 --ceiling
	$(BIN) bench reply --rate 1000 --seconds 30
bench-peers:
	../shared/bench/peers.sh drain 20000
	../shared/bench/peers.sh ingest 10

## Fuzz the webhook parsers and the task-entry decoder (fuzz/): each target FUZZ_SECONDS, with
## nightly Rust; not part of `make test`. A crashing input is saved in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := meta google generic task_entry
fuzz:
	@rustup run nightly rustc --version >/dev/null 2>&1 || \
		{ echo "cargo fuzz needs nightly Rust: run  rustup toolchain install nightly  then  make fuzz"; exit 1; }
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz
	@# the main crate's dependency versions, the fuzz targets' own added
	@[ -e fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
	@fuzz/seed.sh
	failed=; for t in $(FUZZ_TARGETS); do \
		CARGO_TARGET_DIR=$(HOME)/.cache/switchyard-fuzz-target cargo +nightly fuzz run $$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -dict=fuzz/json.dict || failed="$$failed $$t"; \
	done; \
	[ -z "$$failed" ] || { echo "fuzz targets that failed:$$failed (inputs in fuzz/artifacts/)"; exit 1; }
