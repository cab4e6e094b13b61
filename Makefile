# Everyday commands. `make test` is the one the README and CI use: it installs
# what is missing (Debian packages, the Rust extension, Python test tools) and
# runs every check.
PY ?= python3
APT_PACKAGES := mariadb-server postgresql socat chromium chromium-driver systemd
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test setup setup-system build lint fmt test-rust test-py bench bench-quick bench-rust fuzz clean

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

# Every benchmark, figures against their goals into benches/RESULTS.md and the
# README table; `make bench-quick` is the short form (under two minutes).
bench:
	$(PY) benches/run.py

bench-quick:
	$(PY) benches/run.py --quick

bench-rust:
	cargo bench -p sml_bench --bench decode

# Coverage-guided fuzzing (nightly + cargo-fuzz): see sml_core/fuzz/README.md.
fuzz:
	cd sml_core/fuzz && cargo +nightly fuzz run decode_stream -- -max_total_time=60

clean:
	cargo clean
	rm -rf smlogger/_sml_core*.so .pytest_cache .mypy_cache .ruff_cache
