#!/usr/bin/env bash
# Builds the dashboard's front-end bundle (crates/stasis-dashboard/web → web/dist), which
# `cargo build` then embeds in the server. Idempotent: skips when the sources, the lock
# file and the Node.js version are those of the last build.
#
#   scripts/build-dashboard.sh [--force]
#
# Needs Node.js >= 20 and npm (STASIS_SETUP_TEST=1 scripts/setup.sh installs them). Without
# them it says so and exits 0: the server then answers /dashboard with a page that says
# how to build it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$REPO/crates/stasis-dashboard/web"
DIST="$WEB/dist"
STAMP="$DIST/.stamp"

say() { printf '[dashboard] %s\n' "$*"; }
die() { printf '[dashboard] error: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) die "unknown argument $1 (usage: $0 [--force])" ;;
esac

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "Node.js and npm are missing: the dashboard is not built (the server will say how to build it)"
  exit 0
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is required, found $(node --version)"

# Everything the bundle is made from, in a stable order.
fingerprint() {
  (
    cd "$WEB"
    find . -path ./node_modules -prune -o -path ./dist -prune -o -type f -print \
      | LC_ALL=C sort | xargs -d '\n' sha256sum
    echo "node $(node --version)"
  ) | sha256sum | cut -c1-64
}

want="$(fingerprint)"
if [ "$force" = 0 ] && [ -f "$STAMP" ] && [ -f "$DIST/index.html" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  say "bundle up to date ($DIST)"
  exit 0
fi

cd "$WEB"
lock_sum="$(sha256sum package-lock.json | cut -c1-64)"
if [ ! -f node_modules/.lock-sum ] || [ "$(cat node_modules/.lock-sum)" != "$lock_sum" ]; then
  say "installing the front-end packages (npm ci)"
  timeout 600 npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed in $WEB"
  echo "$lock_sum" >node_modules/.lock-sum
fi
say "building the bundle"
timeout 600 npm run --silent build || die "the front-end build failed in $WEB"
[ -f "$DIST/index.html" ] || die "the build made no $DIST/index.html"
echo "$want" >"$STAMP"
say "bundle built: $(du -sh "$DIST" | cut -f1) in $DIST"
