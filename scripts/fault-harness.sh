#!/usr/bin/env bash
# The whole crash-test table: SIGKILL of the runtime's process (a server crash), runc,
# CRIU or the sandbox's PID 1 at every fault point of pause, resume and fork, then
# recovery, the sandbox's state and memory checked, and every trace checked after kill.
# Prints one line per case and the outcome counts. Run as root, after scripts/test.sh
# has built the `base` template (or with STASIS_TEST_DATA_DIR pointing at one).
set -euo pipefail
cd "$(dirname "$0")/.."
export STASIS_TEST_DATA_DIR="${STASIS_TEST_DATA_DIR:-/var/lib/stasis-test}"
exec cargo test -p stasis-runtime --locked --test faults -- --ignored --exact crash_points_all --nocapture --test-threads=1
