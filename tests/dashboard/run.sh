#!/usr/bin/env bash
# Dashboard suite: the dashboard in headless Chromium (Playwright, Debian's chromium)
# against a real `stasis serve` with real sandboxes.
#
#   tests/dashboard/run.sh [--install-only]
#
# Installs playwright-core (package-lock.json) into <repo>/.cache/dashboard, skipping it
# when installed. Builds nothing: expects the bundle (scripts/build-dashboard.sh) built
# into `cargo build --workspace` (binaries from STASIS_BIN_DIR, default
# <repo>/target/debug), /usr/bin/chromium (STASIS_SETUP_TEST=1 scripts/setup.sh) and the
# template base in $STASIS_TEST_DATA_DIR/templates (default /var/lib/stasis-test).
# Starts its own server on 127.0.0.1 with its own data dir and always removes both.
# Screenshots go to <repo>/.cache/dashboard/artifacts/<run>/. Run as root.
#
# Environment: STASIS_BIN_DIR, STASIS_TEST_DATA_DIR, STASIS_DASHBOARD_PORT (default: a
# free port), STASIS_CHROMIUM (default /usr/bin/chromium), DASHBOARD_SUITE_TIMEOUT (s,
# default 240).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="$REPO/.cache/dashboard"
BIN_DIR="${STASIS_BIN_DIR:-$REPO/target/debug}"
TEST_DATA="${STASIS_TEST_DATA_DIR:-/var/lib/stasis-test}"
CHROMIUM="${STASIS_CHROMIUM:-/usr/bin/chromium}"
BRIDGE=stasisd0
SUBNET=10.251.0.0/16
SUITE_TIMEOUT="${DASHBOARD_SUITE_TIMEOUT:-240}"

say() { printf '[dashboard] %s\n' "$*"; }
die() { printf '[dashboard] error: %s\n' "$*" >&2; exit 2; }

install_only=0
for a in "$@"; do
  case "$a" in
    --install-only) install_only=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $a" ;;
  esac
done

# ---------------------------------------------------------------- installation
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required (Node.js 20)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is required, found $(node --version)"

install_node() {
  local dir="$CACHE/node" want
  want="node $(node --version) lock $(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-64)"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    say "npm packages up to date ($dir)"
    return
  fi
  say "installing the npm packages into $dir (npm ci)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$dir/"
  (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$dir/.installed"
}
mkdir -p "$CACHE"
install_node
[ "$install_only" = 0 ] || exit 0

# ---------------------------------------------------------------- server
[ "$(id -u)" -eq 0 ] || die "run as root: the server runs sandboxes (runc, CRIU, veths)"
[ -x "$CHROMIUM" ] || die "$CHROMIUM missing: STASIS_SETUP_TEST=1 scripts/setup.sh installs Debian's chromium"
for b in stasis stasis-envd stasis-netns-hook; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b missing: build the workspace first (cargo build --workspace)"
done
[ -e "$TEST_DATA/templates/base/rootfs" ] \
  || die "template base missing in $TEST_DATA/templates: stasis template build base --data-dir $TEST_DATA"

RUNS="$TEST_DATA/dashboard"
mkdir -p "$RUNS"

# Leftovers of interrupted earlier runs (their runner is gone): server, sandboxes, data dir.
for d in "$RUNS"/run-*; do
  [ -d "$d" ] || continue
  if [ -f "$d/runner.pid" ] && kill -0 "$(cat "$d/runner.pid")" 2>/dev/null; then
    continue # a run in progress
  fi
  if [ -f "$d/server.pid" ]; then
    pid="$(cat "$d/server.pid")"
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $d "; then
      say "stopping the server $pid of an interrupted run"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  say "removing the leftovers of an interrupted run: $d"
  "$BIN_DIR/stasis" gc --data-dir "$d" --bridge "$BRIDGE" --subnet "$SUBNET" || true
  rm -rf "$d"
done

RUN_NAME="run-$(date +%Y%m%d-%H%M%S)-$$"
DATA="$RUNS/$RUN_NAME"
LOGS="$CACHE/logs/$RUN_NAME"
ARTIFACTS="$CACHE/artifacts/$RUN_NAME"
SERVER_PID=""
TORN_DOWN=0

# Stops the server, removes every sandbox and the data dir. Returns
# non-zero if `stasis gc` failed.
teardown() {
  local rc=0
  TORN_DOWN=1
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -d "$DATA" ]; then
    "$BIN_DIR/stasis" gc --data-dir "$DATA" --bridge "$BRIDGE" --subnet "$SUBNET" >>"$LOGS/gc.log" 2>&1 || rc=1
    rm -rf "$DATA" || rc=1
  fi
  return "$rc"
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$TORN_DOWN" = 0 ]; then
    teardown || { say "teardown failed (stasis gc), see $LOGS/gc.log"; [ "$rc" -ne 0 ] || rc=1; }
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$DATA/templates" "$LOGS" "$ARTIFACTS"
echo $$ >"$DATA/runner.pid"
# Keep the logs and screenshots of the last 5 runs.
for k in logs artifacts; do
  ls -1d "$CACHE/$k"/run-* 2>/dev/null | sort | head -n -5 | xargs -r rm -rf
done
for t in "$TEST_DATA"/templates/*; do
  [ -d "$t" ] && ln -s "$t" "$DATA/templates/$(basename "$t")"
done

if [ -n "${STASIS_DASHBOARD_PORT:-}" ]; then
  PORT="$STASIS_DASHBOARD_PORT"
else
  PORT="$(node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')"
fi
API_KEY="e2b_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
URL="http://127.0.0.1:$PORT"

say "starting the server on $URL (data $DATA, log $LOGS/server.log)"
"$BIN_DIR/stasis" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --bridge "$BRIDGE" \
  --subnet "$SUBNET" --api-key "$API_KEY" --no-internet >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!
echo "$SERVER_PID" >"$DATA/server.pid"

deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null --max-time 2 "$URL/health" 2>/dev/null; do
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$LOGS/server.log" >&2; die "the server exited at start"; }
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$LOGS/server.log" >&2; die "no GET /health = 200 within 60 s"; }
  sleep 0.2
done
say "server ready"
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$URL/dashboard/" || true)"
[ "$code" = 200 ] || die "GET /dashboard/ answered $code, not 200: build the bundle (scripts/build-dashboard.sh), then cargo build --workspace"

# ---------------------------------------------------------------- suite
say "running the dashboard suite (log $LOGS/suite.log, screenshots $ARTIFACTS)"
started=$SECONDS
set +e
DASHBOARD_URL="$URL" DASHBOARD_API_KEY="$API_KEY" DASHBOARD_ARTIFACTS="$ARTIFACTS" \
  DASHBOARD_CHROMIUM="$CHROMIUM" DASHBOARD_RUN_ID="${RUN_NAME//-/}" DASHBOARD_NODE_DIR="$CACHE/node" \
  NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost" \
  timeout --kill-after=20 "$SUITE_TIMEOUT" node "$HERE/dashboard.test.mjs" </dev/null 2>&1 \
  | tee "$LOGS/suite.log"
rc="${PIPESTATUS[0]}"
set -e
say "suite took $((SECONDS - started)) s (exit $rc)"
if [ "$rc" != 0 ]; then
  echo "---------------- last 40 lines of the server log"
  tail -n 40 "$LOGS/server.log"
fi
say "stopping the server, removing the sandboxes (stasis gc) and $DATA"
teardown || { say "teardown failed (stasis gc), see $LOGS/gc.log"; [ "$rc" -ne 0 ] || rc=1; }
exit "$rc"
