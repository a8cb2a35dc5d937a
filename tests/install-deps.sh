#!/usr/bin/env bash
# Installs the Debian packages Meshless's tests need, when they are missing.
set -euo pipefail
# The netns tools, then the unmodified programs tests/e2e runs in lab pods
# (nginx and curl, redis-server with redis-cli and redis-benchmark).
pkgs=(iptables nftables iproute2 conntrack procps nginx curl redis-server redis-tools)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The tests start nginx and redis themselves: keep the packages' scripts
# from starting system services, unless the machine already has a policy.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
