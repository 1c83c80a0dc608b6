#!/usr/bin/env bash
# `make demo`: boot the test guest with its emulated CD drive and show blkcache at work on it (add, mount, read
# files, `blkcache status`). Extra arguments go to run.sh (e.g. --no-build).
set -euo pipefail
exec "$(dirname "$0")/run.sh" "$@" "$(dirname "$0")/demo-guest.sh"
