#!/usr/bin/env bash
# Chromium for the dashboard's browser tests (tests/browser), on a Debian/Ubuntu machine.
#
#   services/chromium.sh        install Debian's "chromium" package (apt-get, as root) when
#                               /usr/bin/chromium is absent; print its version
#
# Idempotent: when /usr/bin/chromium exists it only prints the version. Playwright drives this
# system browser (executable_path="/usr/bin/chromium"); it never downloads a browser of its own.
set -euo pipefail

CHROMIUM=${RESILIENT_TASK_CHROMIUM:-/usr/bin/chromium}

log() { printf '==> chromium: %s\n' "$*" >&2; }

if [[ ! -x $CHROMIUM ]]; then
    if [[ $(id -u) != 0 ]]; then
        log "$CHROMIUM is missing and this is not root: run 'apt-get install chromium' first"
        exit 1
    fi
    log "installing chromium from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if [[ ! -x $CHROMIUM ]]; then
    log "$CHROMIUM is still missing after the install"
    exit 1
fi
log "$("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM (version unknown)")"
