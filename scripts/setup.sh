#!/usr/bin/env bash
# Installs everything Stasis needs on a Debian 12 host, as root. Idempotent: each step
# checks what is present, installs only what is missing, and verifies what it installed.
#
#   scripts/setup.sh            host packages + CRIU
#   STASIS_SETUP_TEST=1 ...     also the test-only tools (Node.js/npm, Python venv, Chromium)
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_DEBIAN_REV=1
# sha256 of criu_${CRIU_VERSION}.orig.tar.xz from the Debian source package. Add a line
# here to accept a newer 4.2.x source once its checksum is known.
declare -A CRIU_SHA256=(
  [4.2.1]=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
)
CRIU_PREFIX=/usr/local
CRIU_BIN="$CRIU_PREFIX/sbin/criu"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
if [ -r /etc/debian_version ]; then
  case "$(cut -d. -f1 /etc/debian_version)" in
    12) ;;
    *) say "warning: tested on Debian 12, this is Debian $(cat /etc/debian_version)";;
  esac
else
  die "Debian 12 is required (no /etc/debian_version)"
fi

APT_PACKAGES=(
  runc iptables nftables iproute2 debootstrap ca-certificates xz-utils zstd
  build-essential pkg-config libseccomp-dev
  # CRIU build dependencies
  libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev libnftables-dev
  libaio-dev uuid-dev libdrm-dev dpkg-dev
)
if [ "${STASIS_SETUP_TEST:-0}" = 1 ]; then
  # chromium: the dashboard suite drives it headless (tests/dashboard); curl: its probes.
  APT_PACKAGES+=(python3-venv chromium curl)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: check the machine's apt sources"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
else
  say "Debian packages present"
fi
for b in runc iptables nft ip debootstrap; do
  command -v "$b" >/dev/null || die "$b is missing after install"
done

criu_ok() {
  [ -x "$CRIU_BIN" ] || return 1
  local v
  v=$("$CRIU_BIN" --version 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$v" ] || return 1
  dpkg --compare-versions "$v" ge 4.2 || return 1
  "$CRIU_BIN" check >/dev/null 2>&1
}

if criu_ok; then
  say "CRIU present: $("$CRIU_BIN" --version | head -1)"
else
  sha=${CRIU_SHA256[$CRIU_VERSION]:-}
  [ -n "$sha" ] || die "no pinned checksum for CRIU $CRIU_VERSION"
  # The machine's Debian mirror, read from its apt sources (deb822 or one-line format).
  mirror=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hoE '^deb\s+(\[[^]]*\]\s+)?\S+' /etc/apt/sources.list 2>/dev/null \
             | awk '{print $NF}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || die "cannot find a Debian mirror in /etc/apt/sources*"
  build=/var/cache/stasis/criu-build
  mkdir -p "$build/apt/lists/partial" "$build/apt/archives/partial"
  tarball="$build/criu_${CRIU_VERSION}.orig.tar.xz"
  if ! echo "$sha  $tarball" | sha256sum -c --status 2>/dev/null; then
    say "fetching CRIU $CRIU_VERSION source from $mirror (Debian sid source package)"
    echo "deb-src [trusted=yes] $mirror sid main" > "$build/apt/sources.list"
    aptopts=(-o "Dir::Etc::SourceList=$build/apt/sources.list" -o "Dir::Etc::SourceParts=-"
             -o "Dir::State::Lists=$build/apt/lists" -o "Dir::Cache::Archives=$build/apt/archives"
             -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
    apt-get "${aptopts[@]}" update -qq || die "could not read the sid source index from $mirror"
    # Only the upstream tarball is needed; the mirror may lack the Debian diff, so a
    # failure here is judged by whether the tarball arrived.
    (cd "$build" && apt-get "${aptopts[@]}" source --download-only -qq "criu=${CRIU_VERSION}-${CRIU_DEBIAN_REV}" >/dev/null 2>&1) || true
    [ -s "$tarball" ] \
      || die "could not download criu=${CRIU_VERSION}-${CRIU_DEBIAN_REV} from $mirror; if sid moved on, add the new version and its sha256 to $0"
    echo "$sha  $tarball" | sha256sum -c --status \
      || die "checksum mismatch for $tarball (expected $sha): refusing to build"
  fi
  say "building CRIU $CRIU_VERSION (about a minute)"
  rm -rf "$build/criu-$CRIU_VERSION"
  tar -C "$build" -xf "$tarball"
  make -C "$build/criu-$CRIU_VERSION" -j"$(nproc)" criu >"$build/build.log" 2>&1 \
    || die "CRIU build failed, see $build/build.log"
  install -D -m 0755 "$build/criu-$CRIU_VERSION/criu/criu" "$CRIU_BIN"
  criu_ok || die "$CRIU_BIN check failed: $("$CRIU_BIN" check 2>&1 | tail -3)"
  say "CRIU installed: $("$CRIU_BIN" --version | head -1)"
fi

if [ "${STASIS_SETUP_TEST:-0}" = 1 ]; then
  # The SDK conformance suite runs the official JavaScript SDKs on Node.js >= 20.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null \
      || die "could not install nodejs and npm"
  fi
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] \
    || die "the E2B SDK tests need Node.js >= 20, found $(node --version): install a newer Node.js"
  /usr/bin/chromium --version >/dev/null 2>&1 \
    || die "/usr/bin/chromium does not run after installing Debian's chromium package"
fi

# Kernel facilities the runtime relies on.
[ -e /proc/self/ns/user ] || die "kernel without user namespaces"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "kernel without overlayfs"
say "host ready"
