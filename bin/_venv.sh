# shellcheck shell=bash
# Sourced by the bin/ scripts: make sure the virtualenv ($VENV, default .venv) exists with the
# requirements of $venv_level (set before sourcing): "base" to serve (bin/run, bin/serve), "dev" to
# test and check (bin/test, bin/lock, CI; the default). Installs from the lock,
# requirements/$venv_level.lock (every package pinned, every file's hash checked), and only when it
# changed, showing pip's progress. A lock older than a pin of requirements/*.txt (bin/lock not run
# since) is reported, and the .txt is installed instead until bin/lock is run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
_level=${venv_level:-dev}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "evalsvc needs Python 3.11 or newer as $PYTHON (set PYTHON=python3.11)" >&2
    exit 1
fi
if PYTHON=$PYTHON bin/lock --check 2>/dev/null; then
    _kind=lock
else
    PYTHON=$PYTHON bin/lock --check || true
    echo "Installing from requirements/$_level.txt until bin/lock is run." >&2
    _kind=txt
fi
_files() { echo requirements/base.$_kind "requirements/$1.$_kind"; }  # LEVEL: what it installs
_stamp() { cat "$@" | sha256sum | cut -c1-16; }
_ready() {  # LEVEL: the virtualenv has LEVEL installed from its files as they are now
    # shellcheck disable=SC2046
    [[ -x $VENV/bin/python && -f $VENV/.req-$1 && $(<"$VENV/.req-$1") == "$(_stamp $(_files "$1"))" ]]
}
if ! _ready "$_level" && ! { [[ $_level == base ]] && _ready dev; }; then
    _from=("requirements/$_level.$_kind")
    [[ $_kind == lock ]] && _from=(--require-hashes -r "${_from[0]}") || _from=(-r "${_from[0]}")
    echo "Setting up $VENV from requirements/$_level.$_kind (a minute the first time)..." >&2
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on "${_from[@]}" |
        { grep --line-buffered -v '^Requirement already satisfied' >&2 || true; }
    "$VENV/bin/python" -m pip check >/dev/null
    # shellcheck disable=SC2046
    _stamp $(_files "$_level") >"$VENV/.req-$_level"
fi
unset _level _kind _from
unset -f _files _stamp _ready
export PATH="$PWD/$VENV/bin:$PATH"
