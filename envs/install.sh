#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned lock and the splicer package; quick no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.lock-$(sha256sum envs/requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r envs/requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
rm -f .venv/.lock-*
touch "$stamp"
