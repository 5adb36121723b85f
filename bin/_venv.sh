# shellcheck shell=bash
# Sourced by bin/run and bin/test: make sure the virtualenv ($VENV, default .venv) exists and
# has requirements/dev.txt installed; reinstall only when that file set changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp=$(cat requirements/*.txt | sha256sum | cut -c1-16)
if [[ ! -x $VENV/bin/python || ! -f $VENV/.req-stamp || $(<"$VENV/.req-stamp") != "$stamp" ]]; then
    echo "Setting up $VENV (requirements/dev.txt)..." >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements/dev.txt
    echo "$stamp" >"$VENV/.req-stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
