# Two commands on a fresh Debian/Ubuntu machine with the Rust toolchain:
#   make run    build and start the broker on config/default.toml (embedded RocksDB in ./data)
#   make test   run the whole test suite
# Both install what RocksDB's bindings need (clang, libclang) when it is missing.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test deps bench loadtest-smoke lint

deps:
	@if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then \
		echo "installing clang/libclang-dev for RocksDB's bindings"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang libclang-dev; \
	fi

run: deps
	$(CARGO) run --release --bin switchboard -- --config config/default.toml

# One `cargo test --workspace` feature set for everything: a separate `cargo build --bin` resolves
# features without dev-dependencies and would build RocksDB a second time. The first command
# builds every test and the broker binary (into target/debug) that the load generator's smoke
# test starts; CARGO_INCREMENTAL=0 keeps a one-off CI build from writing incremental caches.
test: deps
	CARGO_INCREMENTAL=0 $(CARGO) test --workspace --no-run
	CARGO_INCREMENTAL=0 SWITCHBOARD_BIN=$(CURDIR)/target/debug/switchboard $(CARGO) test --workspace

bench: deps
	$(CARGO) bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
