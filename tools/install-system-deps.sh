#!/bin/sh
# Install the Debian packages whose tools the test suite calls (promtool, and curl
# for the curl example), when they are missing.
# Needs root for apt-get; without root it prints what to install and the tests
# that need the tool fail with a message naming it.
set -eu

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v curl >/dev/null 2>&1 || missing="$missing curl"

[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install these Debian packages for the full test suite:$missing" >&2
    exit 0
fi
# Wait for another apt-get to release the lock instead of failing at once.
lock_wait="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086 # the option and package lists are split on purpose
apt-get $lock_wait update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get $lock_wait install -y -qq --no-install-recommends $missing
