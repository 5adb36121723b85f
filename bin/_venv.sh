# shellcheck shell=bash
# Sourced by the bin/ scripts: make sure the virtualenv ($VENV, default .venv) exists with the
# requirements of $venv_level (set before sourcing): "base" to serve (bin/run, bin/serve), "dev" to
# test and check (bin/test, CI; the default). Installs only when those files changed, showing
# pip's progress.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
_level=${venv_level:-dev}
_stamp() { cat requirements/base.txt $([[ $1 == dev ]] && echo requirements/dev.txt) | sha256sum | cut -c1-16; }
_ready() { [[ -x $VENV/bin/python && -f $VENV/.req-$1 && $(<"$VENV/.req-$1") == "$(_stamp "$1")" ]]; }
if ! _ready "$_level" && ! { [[ $_level == base ]] && _ready dev; }; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "evalsvc needs Python 3.11 or newer as $PYTHON (set PYTHON=python3.11)" >&2
        exit 1
    fi
    echo "Setting up $VENV with requirements/$_level.txt (a minute the first time)..." >&2
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
        -r "requirements/$_level.txt" | grep -v '^Requirement already satisfied' >&2 || true
    "$VENV/bin/python" -m pip check >/dev/null
    _stamp "$_level" >"$VENV/.req-$_level"
fi
unset _level
export PATH="$PWD/$VENV/bin:$PATH"
