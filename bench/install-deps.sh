#!/bin/sh
# Install the Debian packages that the benchmark harness runs: wrk (load
# generator) and nginx (the static-file baseline). Needs root for apt-get;
# without root it prints what to install.
set -eu

missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"

[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install these Debian packages to run the benchmarks:$missing" >&2
    exit 1
fi
# Wait for another apt-get to release the lock instead of failing at once.
lock_wait="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086 # the option and package lists are split on purpose
apt-get $lock_wait update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get $lock_wait install -y -qq --no-install-recommends $missing
