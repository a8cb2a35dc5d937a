#!/usr/bin/env bash
# Builds the real Kubernetes control plane that the tests in tests/k8s run
# against: kube-apiserver, kube-controller-manager and kubectl at
# $KUBE_VERSION, from the Go module proxy (there is no other way to get them
# here), in a scratch module under $CACHE/k8s. k8s.io/kubernetes cannot be
# `go install`ed (its go.mod replaces the staging modules with local paths),
# so the scratch module requires it and replaces every staging module with its
# published v0.x.y twin. Also installs etcd (Debian etcd-server) if missing.
#
# Cached: does nothing when the binaries exist and report $KUBE_VERSION.
# Output: $CACHE/k8s/bin/{kube-apiserver,kube-controller-manager,kubectl}.
# First build on 2 cores: about 5-7 min; later runs: under a second.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
STAGING_VERSION=v0${KUBE_VERSION#v1}             # v1.35.4 -> v0.35.4
CACHE=${CACHE:-.cache}
CACHE=$(mkdir -p "$CACHE" && cd "$CACHE" && pwd)
DIR=$CACHE/k8s
BIN=$DIR/bin
CMDS=(kube-apiserver kube-controller-manager kubectl)
GO=${GO:-go}

log() { echo "[build-kube $(date +%H:%M:%S)] $*"; }

install_etcd() {
  if command -v etcd >/dev/null 2>&1; then
    log "etcd: $(etcd --version 2>/dev/null | head -1)"
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "etcd is missing; install Debian's etcd-server (as root: apt-get install etcd-server)" >&2
    exit 1
  fi
  log "installing etcd-server from apt"
  apt-get update -qq
  # Keep the package's own etcd service from starting: the tests run their
  # own etcd on loopback ports with a temporary data dir.
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod +x $prc; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
  [ $created = 1 ] && rm -f $prc
  log "etcd: $(etcd --version 2>/dev/null | head -1)"
}

up_to_date() {
  [ "$(cat "$BIN/.version" 2>/dev/null)" = "$KUBE_VERSION" ] || return 1
  for c in "${CMDS[@]}"; do [ -x "$BIN/$c" ] || return 1; done
  "$BIN/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"
}

install_etcd

if up_to_date; then
  log "kube binaries $KUBE_VERSION already in $BIN"
  exit 0
fi

start=$(date +%s)
mkdir -p "$DIR/src" "$BIN"
cd "$DIR/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log "fetching k8s.io/kubernetes@$KUBE_VERSION go.mod"
gomod=$($GO mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
[ -f "$gomod" ] || { echo "cannot download k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }
# The staging modules: "k8s.io/foo => ./staging/src/k8s.io/foo" in its go.mod.
mapfile -t staging < <(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$gomod" | sort -u)
[ ${#staging[@]} -gt 10 ] || { echo "found only ${#staging[@]} staging modules in $gomod" >&2; exit 1; }
log "${#staging[@]} staging modules, replaced with $STAGING_VERSION"

rm -f go.mod go.sum
$GO mod init meshless.local/kube-build >/dev/null 2>&1
{
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
} >>go.mod

pkgs=()
for c in "${CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
log "go get ${pkgs[*]} (resolving and downloading modules)"
$GO get "${pkgs[@]/%/@$KUBE_VERSION}" 2>&1 | grep -v '^go: downloading' || true

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "$KUBE_VERSION" | cut -d. -f1 | tr -d v)"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
for c in "${CMDS[@]}"; do
  t0=$(date +%s)
  log "building $c"
  CGO_ENABLED=0 $GO build -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
  log "built $c in $(( $(date +%s) - t0 ))s"
done
echo "$KUBE_VERSION" >"$BIN/.version"
"$BIN/kube-apiserver" --version
log "done in $(( $(date +%s) - start ))s: ${CMDS[*]} in $BIN"
