# Everyday commands. `make test` is the one the README and CI use: it installs
# what is missing (Debian packages, the Rust extension, Python test tools) and
# runs every check.
PY ?= python3
APT_PACKAGES := mariadb-server postgresql socat chromium chromium-driver systemd mosquitto
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test test-fast setup setup-system build lint fmt test-rust test-py test-soak bench bench-rust fuzz fuzz-ci fuzz-tools clean

test: setup lint test-rust test-py

setup: setup-system build

# Debian packages the tests start for real (MariaDB, socat ptys, Chromium, systemd-analyze).
setup-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Editable install: maturin builds the release extension into smlogger/.
build:
	$(PY) -m pip install -q "maturin>=1.5,<2"
	$(PY) -m pip install -q -e ".[test]"

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p sml_bench --all-targets -- -D warnings
	cargo clippy --features python -- -D warnings
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m mypy.stubtest smlogger._sml_core

fmt:
	cargo fmt --all
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test-rust:
	cargo test -p sml_core

test-py:
	$(PY) -m pytest -q

# The quick loop while editing: no database servers, browser, socat or long subprocess runs
# (the tests marked `slow`), no setup, no lint; `make test` still runs everything.
test-fast:
	$(PY) -m pytest -q -m "not slow"

bench:
	$(PY) benches/bench_decode.py

bench-rust:
	cargo bench -p sml_bench --bench decode

# Coverage-guided fuzzing (nightly + cargo-fuzz): see sml_core/fuzz/README.md.
fuzz:
	cd sml_core/fuzz && cargo +nightly fuzz run decode_stream -- -max_total_time=60

# CI: every fuzz target for FUZZ_SECONDS on the nightly toolchain, starting from the committed
# seeds (sml_core/fuzz/seeds, replayed on stable by `cargo test`). A crash, a failed assertion,
# a leak or a timeout makes libFuzzer exit non-zero, and this target with it; the input lands in
# sml_core/fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := decode_stream parse_file crc
fuzz-ci: fuzz-tools
	@set -e; cd sml_core/fuzz; for t in $(FUZZ_TARGETS); do \
		echo "== fuzzing $$t for $(FUZZ_SECONDS) s (log: sml_core/fuzz/fuzz-$$t.log)"; \
		mkdir -p corpus/$$t; \
		if cargo +nightly fuzz run --debug-assertions $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			>fuzz-$$t.log 2>&1; then \
			grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss)' fuzz-$$t.log || true; \
		else \
			tail -n 60 fuzz-$$t.log; \
			echo "fuzz target $$t FAILED: the input is in sml_core/fuzz/artifacts/$$t/"; exit 1; \
		fi; \
	done

# nightly toolchain (rustup) and cargo-fuzz (crates.io), when missing
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

clean:
	cargo clean
	rm -rf smlogger/_sml_core*.so .pytest_cache .mypy_cache .ruff_cache
