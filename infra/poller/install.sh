#!/bin/sh
# Installs Kafka Ingress into the Python environment of `python` on PATH:
#
#   install.sh WHEEL [LOCK_FILE]
#
# With a lock file (requirements.lock, every dependency pinned with its hashes) the dependencies
# come from it alone (--require-hashes) and the wheel is added without resolving again, so the
# image holds exactly the locked versions. Without one, pip resolves the wheel's own bounds.
# The image (infra/poller/Dockerfile) runs this script; tests/e2e/test_wheel.py runs the same
# script in a fresh virtualenv, since no container registry is reachable where the tests run.
set -eu
wheel="$1"
lock="${2:-}"
if [ -n "$lock" ]; then
    python -m pip install --require-hashes --no-deps -r "$lock"
    python -m pip install --no-deps "$wheel"
    python -m pip check
else
    python -m pip install "$wheel"
fi
