# Two commands on a fresh Debian/Ubuntu machine with the Rust toolchain:
#   make run    build (dev profile) and start the broker on config/default.toml (RocksDB in ./data)
#   make test   run the whole test suite
# Both install what RocksDB's bindings need (clang, libclang) when it is missing, and the browser
# the console's tests drive (Debian's chromium and chromium-driver).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test deps browser-deps bench loadtest-smoke lint

deps:
	@if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then \
		echo "installing clang/libclang-dev for RocksDB's bindings"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang libclang-dev; \
	fi

# Only `make test` needs a browser: `make run` stays a short first start.
browser-deps:
	@# The agent console's browser tests (tests/it/console.rs) drive headless Chromium through
	@# chromedriver; Debian packages both, so nothing is downloaded outside apt.
	@if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		echo "installing chromium/chromium-driver for the console's browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

# The dev profile, not --release: `make test` then reuses every dependency this build compiled
# (RocksDB's C++ above all) instead of compiling them a second time in another profile. A
# release binary (benchmarks, load tests, production): `cargo build --release`.
run: deps
	$(CARGO) run --bin switchboard -- --config config/default.toml

# The first command builds every test and the broker binary (into target/debug, beside the load
# generator) that the load generator's smoke test starts; the integration tests are one binary
# (tests/it), so the broker and RocksDB are linked once. CARGO_INCREMENTAL=0 keeps a one-off CI
# build from writing incremental caches.
test: deps browser-deps
	CARGO_INCREMENTAL=0 $(CARGO) test --workspace --no-run
	CARGO_INCREMENTAL=0 $(CARGO) test --workspace

bench: deps
	$(CARGO) bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
