#!/usr/bin/env bash
# E2B conformance suite: the official E2B SDKs, unmodified, against a real Stasis server.
#
#   tests/e2b-sdk/run.sh [--install-only] [SUITE...]
#
# SUITEs (default: all): js-current js-legacy js-ci py-current py-legacy py-ci
#   js-*  npm e2b 2.51.0, e2b 2.23.0 (as e2b-legacy), @e2b/code-interpreter 2.8.0; node --test
#   py-*  PyPI e2b 2.63.0 + e2b-code-interpreter 2.11.5, and e2b 2.22.0 in its own venv; pytest
#   *-ci  need the template code-interpreter-v1; skipped (with the reason) when GET
#         /templates does not list it.
#
# Installs the pinned SDKs (package-lock.json, requirements-*.txt) into <repo>/.cache/e2b-sdk,
# skipping what is already installed. Builds nothing: expects `cargo build --workspace`
# (binaries from STASIS_BIN_DIR, default <repo>/target/debug) and the templates built in
# $STASIS_TEST_DATA_DIR/templates (default /var/lib/stasis-test). Starts its own server on
# 127.0.0.1 with its own data dir and always removes both. Run as root.
#
# Environment: STASIS_BIN_DIR, STASIS_TEST_DATA_DIR, STASIS_SDK_PORT (default: a free port),
# E2B_SDK_JOBS (1 = suites one after the other; 2 = JS and Python side by side, default),
# E2B_SDK_PYTHON (default /usr/bin/python3), E2B_SDK_SUITE_TIMEOUT (s, default 480).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="$REPO/.cache/e2b-sdk"
BIN_DIR="${STASIS_BIN_DIR:-$REPO/target/debug}"
TEST_DATA="${STASIS_TEST_DATA_DIR:-/var/lib/stasis-test}"
BRIDGE=stasisc0
SUBNET=10.250.0.0/16
JOBS="${E2B_SDK_JOBS:-2}"
SUITE_TIMEOUT="${E2B_SDK_SUITE_TIMEOUT:-480}"
ALL_SUITES=(js-current js-legacy js-ci py-current py-legacy py-ci)

say() { printf '[e2b-sdk] %s\n' "$*"; }
die() { printf '[e2b-sdk] error: %s\n' "$*" >&2; exit 2; }

install_only=0
suites=()
for a in "$@"; do
  case "$a" in
    --install-only) install_only=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    js-current|js-legacy|js-ci|py-current|py-legacy|py-ci) suites+=("$a") ;;
    *) die "unknown argument $a (suites: ${ALL_SUITES[*]})" ;;
  esac
done
[ "${#suites[@]}" -gt 0 ] || suites=("${ALL_SUITES[@]}")

# ---------------------------------------------------------------- SDK installation
if [ -n "${E2B_SDK_PYTHON:-}" ]; then PYTHON="$E2B_SDK_PYTHON"
elif [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3
else PYTHON="$(command -v python3)" || die "python3 is required"
fi
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required (Node.js 20)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is required, found $(node --version)"
"$PYTHON" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 9)' 2>/dev/null \
  || die "$PYTHON with venv and ensurepip is required (Debian: apt-get install python3-venv)"

fingerprint() { cat "$@" | sha256sum | cut -c1-64; }

install_node() {
  local dir="$CACHE/node" want
  want="node $(node --version) lock $(fingerprint "$HERE/package.json" "$HERE/package-lock.json")"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    say "npm packages up to date ($dir)"
    return
  fi
  say "installing the npm packages into $dir (npm ci)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$dir/.installed"
}

install_venv() {
  local name="$1" reqs="$HERE/$2" dir="$CACHE/$1" want
  want="python $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)') reqs $(fingerprint "$reqs")"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    say "venv $name up to date ($dir)"
    return
  fi
  say "installing $2 into $dir"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$reqs"
  echo "$want" >"$dir/.installed"
}

mkdir -p "$CACHE"
install_node
install_venv venv-current requirements-current.txt
install_venv venv-legacy requirements-legacy.txt
[ "$install_only" = 0 ] || exit 0

# ---------------------------------------------------------------- server
[ "$(id -u)" -eq 0 ] || die "run as root: the server runs sandboxes (runc, CRIU, veths)"
for b in stasis stasis-envd stasis-netns-hook; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b missing: build the workspace first (cargo build --workspace)"
done
[ -e "$TEST_DATA/templates/base/rootfs" ] \
  || die "template base missing in $TEST_DATA/templates: stasis template build base --data-dir $TEST_DATA"

SDK_DIR="$TEST_DATA/sdk"
mkdir -p "$SDK_DIR"

# Leftovers of interrupted earlier runs (their runner is gone): server, sandboxes, data dir.
for d in "$SDK_DIR"/run-*; do
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
DATA="$SDK_DIR/$RUN_NAME"
LOGS="$CACHE/logs/$RUN_NAME"
SERVER_PID=""
LANE_PIDS=()
TORN_DOWN=0

# Stops the suites still running, the server, removes every sandbox and the data dir.
# Returns non-zero if `stasis gc` failed.
teardown() {
  local rc=0 f p
  TORN_DOWN=1
  for f in "$LOGS"/*.pid; do
    [ -f "$f" ] || continue
    p="$(cat "$f")"
    # timeout(1) leads the process group of its suite and passes TERM on to it.
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${LANE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
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

mkdir -p "$DATA/templates" "$LOGS"
echo $$ >"$DATA/runner.pid"
# Keep the logs of the last 5 runs.
ls -1d "$CACHE"/logs/run-* 2>/dev/null | sort | head -n -5 | xargs -r rm -rf
for t in "$TEST_DATA"/templates/*; do
  [ -d "$t" ] && ln -s "$t" "$DATA/templates/$(basename "$t")"
done

if [ -n "${STASIS_SDK_PORT:-}" ]; then
  PORT="$STASIS_SDK_PORT"
else
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
API_KEY="e2b_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"
URL="http://127.0.0.1:$PORT"

say "starting the server on $URL (data $DATA, log $LOGS/server.log)"
"$BIN_DIR/stasis" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --bridge "$BRIDGE" \
  --subnet "$SUBNET" --api-key "$API_KEY" --no-internet >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!
echo "$SERVER_PID" >"$DATA/server.pid"

health() {
  "$PYTHON" - "$URL/health" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}
deadline=$((SECONDS + 60))
until health; do
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$LOGS/server.log" >&2; die "the server exited at start"; }
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$LOGS/server.log" >&2; die "no GET /health = 200 within 60 s"; }
  sleep 0.2
done
say "server ready"

# ---------------------------------------------------------------- suites
unset E2B_DEBUG E2B_DOMAIN E2B_ACCESS_TOKEN
export E2B_API_URL="$URL" E2B_SANDBOX_URL="$URL" E2B_API_KEY="$API_KEY"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export E2B_SDK_NODE_DIR="$CACHE/node" PYTHONDONTWRITEBYTECODE=1

suite_cmd() {
  local js="node --test --test-timeout=240000 --test-reporter=spec --test-reporter-destination=stdout"
  js+=" --test-reporter=junit --test-reporter-destination=$LOGS/$1.xml"
  local py="-m pytest --junitxml=$LOGS/$1.xml -o junit_suite_name=$1"
  case "$1" in
    js-current) echo "cd $HERE && $js js/current.test.mjs" ;;
    js-legacy) echo "cd $HERE && $js js/legacy.test.mjs" ;;
    js-ci) echo "cd $HERE && $js js/code-interpreter.test.mjs" ;;
    py-current) echo "cd $HERE/py && $CACHE/venv-current/bin/python $py current/test_flows.py" ;;
    py-ci) echo "cd $HERE/py && $CACHE/venv-current/bin/python $py current/test_code_interpreter.py" ;;
    py-legacy) echo "cd $HERE/py && $CACHE/venv-legacy/bin/python $py legacy" ;;
  esac
}

# Runs suites one after the other; records each exit code in $LOGS/<suite>.rc.
run_lane() {
  local s rc pid
  for s in "$@"; do
    rc=0
    E2B_SDK_RUN_ID="${RUN_NAME//-/}${s//-/}" timeout --kill-after=30 "$SUITE_TIMEOUT" \
      bash -c "$(suite_cmd "$s")" </dev/null >"$LOGS/$s.log" 2>&1 &
    pid=$!
    echo "$pid" >"$LOGS/$s.pid"
    wait "$pid" || rc=$?
    rm -f "$LOGS/$s.pid"
    echo "$rc" >"$LOGS/$s.rc"
    say "suite $s finished (exit $rc)"
  done
}

js_suites=() py_suites=()
for s in "${suites[@]}"; do
  case "$s" in js-*) js_suites+=("$s") ;; py-*) py_suites+=("$s") ;; esac
done
say "running: ${suites[*]} (logs in $LOGS)"
started=$SECONDS
if [ "$JOBS" -ge 2 ]; then
  [ "${#js_suites[@]}" -eq 0 ] || { run_lane "${js_suites[@]}" & LANE_PIDS+=($!); }
  [ "${#py_suites[@]}" -eq 0 ] || { run_lane "${py_suites[@]}" & LANE_PIDS+=($!); }
  for p in "${LANE_PIDS[@]}"; do wait "$p" || true; done
  LANE_PIDS=()
else
  run_lane "${js_suites[@]}" "${py_suites[@]}"
fi
say "suites took $((SECONDS - started)) s"

report_args=()
for s in "${suites[@]}"; do
  rc="$(cat "$LOGS/$s.rc" 2>/dev/null || echo 99)"
  report_args+=("$s=$LOGS/$s.xml:$rc")
  if [ "$rc" != 0 ]; then
    echo "---------------- $s (exit $rc): last 150 lines of $LOGS/$s.log"
    tail -n 150 "$LOGS/$s.log"
  fi
done
say "stopping the server, removing the sandboxes (stasis gc) and $DATA"
teardown || report_args+=("!teardown: stasis gc failed, see $LOGS/gc.log")
echo "---------------- results"
status=0
"$PYTHON" "$HERE/report.py" "${report_args[@]}" || status=$?
exit "$status"
