#!/usr/bin/env bash
# Builds the real Kubernetes parts that the tests in tests/k8s run against:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
# kubelet at $KUBE_VERSION, from the Go module proxy (there is no other way
# to get them here), in a scratch module under $CACHE/k8s. k8s.io/kubernetes cannot be
# `go install`ed (its go.mod replaces the staging modules with local paths),
# so the scratch module requires it and replaces every staging module with its
# published v0.x.y twin. Also crictl (sigs.k8s.io/cri-tools $CRICTL_VERSION,
# its own scratch module), and from apt, if missing: etcd (Debian
# etcd-server) and, for the real-node test, containerd and runc.
#
# Cached: does nothing when the binaries exist and report $KUBE_VERSION; a
# missing binary (e.g. kubelet added to an older cache) is built alone.
# Output: $CACHE/k8s/bin/{kube-apiserver,kube-controller-manager,
# kube-scheduler,kubectl,kubelet,crictl}.
# First build on 2 cores: about 7-9 min; later runs: under a second.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
STAGING_VERSION=v0${KUBE_VERSION#v1}             # v1.35.4 -> v0.35.4
CACHE=${CACHE:-.cache}
CACHE=$(mkdir -p "$CACHE" && cd "$CACHE" && pwd)
DIR=$CACHE/k8s
BIN=$DIR/bin
CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
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

# containerd (with its CRI plugin) and runc for the real-node test
# (tests/k8s/node_test.go), which runs its own containerd with its own paths.
install_containerd() {
  if command -v containerd >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "containerd/runc missing; install Debian's containerd and runc (as root: apt-get install containerd runc)" >&2
    exit 1
  fi
  log "installing containerd and runc from apt"
  apt-get update -qq
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod +x $prc; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd runc >/dev/null
  [ $created = 1 ] && rm -f $prc
  log "containerd: $(containerd --version 2>/dev/null | head -1)"
}

# crictl: its own module, no replace directives, so `go install` works.
build_crictl() {
  if [ "$(cat "$BIN/.crictl-version" 2>/dev/null)" = "$CRICTL_VERSION" ] && [ -x "$BIN/crictl" ]; then
    return
  fi
  local t0; t0=$(date +%s)
  log "building crictl $CRICTL_VERSION"
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS= GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 \
    $GO install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  echo "$CRICTL_VERSION" >"$BIN/.crictl-version"
  log "built crictl in $(( $(date +%s) - t0 ))s"
}

# The commands that are missing or not at $KUBE_VERSION.
missing_cmds() {
  local c
  for c in "${CMDS[@]}"; do
    if [ ! -x "$BIN/$c" ] || [ "$(cat "$BIN/.version" 2>/dev/null)" != "$KUBE_VERSION" ]; then
      echo "$c"
    fi
  done
}

install_etcd
install_containerd
build_crictl

mapfile -t todo < <(missing_cmds)
if [ ${#todo[@]} -eq 0 ] && "$BIN/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"; then
  log "kube binaries $KUBE_VERSION already in $BIN"
  exit 0
fi
[ ${#todo[@]} -gt 0 ] || todo=("${CMDS[@]}")

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
for c in "${todo[@]}"; do
  t0=$(date +%s)
  log "building $c"
  CGO_ENABLED=0 $GO build -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
  log "built $c in $(( $(date +%s) - t0 ))s"
done
echo "$KUBE_VERSION" >"$BIN/.version"
"$BIN/kube-apiserver" --version
log "done in $(( $(date +%s) - start ))s: ${todo[*]} in $BIN"
