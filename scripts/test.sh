#!/usr/bin/env bash
# Sets up the host and runs every test: formatting, lints, unit tests, and the
# end-to-end tests against real runc, CRIU and sandboxes. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

export STASIS_TEST_DATA_DIR="${STASIS_TEST_DATA_DIR:-/var/lib/stasis-test}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

STASIS_SETUP_TEST=1 scripts/setup.sh

command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain from rust-toolchain.toml)" >&2; exit 1; }

echo "== the dashboard's front-end bundle (embedded by the build)"
scripts/build-dashboard.sh

echo "== build"
cargo build --workspace --all-targets --locked

echo "== template base (cached after the first build)"
./target/debug/stasis template build base --data-dir "$STASIS_TEST_DATA_DIR"
./target/debug/stasis template build code-interpreter-v1 --data-dir "$STASIS_TEST_DATA_DIR"

gc() {
  local d
  # Per-test data dirs of the server and runtime tests, left by an interrupted run.
  for d in "$STASIS_TEST_DATA_DIR"/servers/* "$STASIS_TEST_DATA_DIR"/private/*; do
    [ -d "$d" ] || continue
    ./target/debug/stasis gc --data-dir "$d" --bridge stasist0 --subnet 10.249.0.0/16
    rm -rf "$d"
  done
  ./target/debug/stasis gc --data-dir "$STASIS_TEST_DATA_DIR" --bridge stasist0 --subnet 10.249.0.0/16
}
echo "== clean up what an interrupted earlier run left"
gc

echo "== fmt and clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
status=0
# --no-fail-fast: one failing test binary must not hide the results of the others. The
# crash tests (crates/stasis-runtime/tests/faults.rs) run a sample of their fault points
# here; scripts/fault-harness.sh runs them all.
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 || status=$?

echo "== the official E2B SDKs against a real server"
tests/e2b-sdk/run.sh || status=$?

echo "== the dashboard in headless Chromium against a real server"
tests/dashboard/run.sh || status=$?

echo "== leftovers"
gc
exit "$status"
