#!/usr/bin/env bash
# Start the local services the test suite talks to, when they are not already running, and install
# the browser the page tests drive.
# CI machines start them before the run; this covers a machine where one has stopped.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# Browser tests drive Debian's Chromium through Playwright (which cannot download browsers here).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "/usr/bin/chromium is missing: install Debian's chromium package for the browser tests" >&2
    exit 1
  fi
fi

# Video-visit tests relay calls through coturn (a test server on 127.0.0.1 that the tests start
# with their own configuration and secret; the packaged service is not used).
if [ ! -x /usr/bin/turnserver ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing coturn for the video-visit tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
  else
    echo "/usr/bin/turnserver is missing: install Debian's coturn package for the video-visit tests" >&2
    exit 1
  fi
fi

# Visits through an SFU are tested against Janus (its VideoRoom plugin); the tests start their own
# Janus with a generated configuration, the packaged service is not used.
# Media through Janus is tested inside a network namespace with a veth interface (`ip`, iproute2).
if [ ! -x /usr/bin/janus ] || ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Janus (and iproute2) for the SFU tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq janus iproute2 >/dev/null
  else
    echo "/usr/bin/janus is missing: install Debian's janus package for the SFU tests" >&2
    exit 1
  fi
fi
