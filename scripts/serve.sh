#!/usr/bin/env bash
# Sets up the host, builds Stasis and the default template, and runs the server.
# Run as root. Extra arguments go to `stasis serve` (e.g. --listen 0.0.0.0:3000).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${STASIS_DATA_DIR:-/var/lib/stasis}"

scripts/setup.sh
command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain from rust-toolchain.toml)" >&2; exit 1; }

echo "== the dashboard's front-end bundle (embedded by the build)"
scripts/build-dashboard.sh

echo "== building stasis (release)"
cargo build --release --locked --workspace --bins

echo "== template base"
./target/release/stasis template build base --data-dir "$DATA_DIR"

exec ./target/release/stasis serve --data-dir "$DATA_DIR" "$@"
