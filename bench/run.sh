#!/usr/bin/env bash
# evalsvc's benchmark, one command (see bench/README.md):
#
#   bench/run.sh                 start everything on loopback (database evalsvc_bench, fake users
#                                service, evalsvc under gunicorn), seed 1M rows, run the scenarios,
#                                stop everything, print the table
#   BASE_URL=http://127.0.0.1:8000 DATABASE_URL=postgres://... STAFF_TOKEN=... bench/run.sh
#                                the same against an evalsvc that is already running
#
# Settings (environment): DURATION=10 WARMUP=2 CONNECTIONS=16 THREADS=2 WORKERS=3
#   SCENARIOS="get_one user_list upsert summary stats bulk export" APP_PORT=8300 USERS_PORT=8301
#   CACHE_URL=redis://127.0.0.1:6379/13 (or locmem://) WARM_TOKENS=10000 KEEP_DB=0 SEED=1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

# Self-starting mode needs evalsvc's virtualenv (the project's own: bin/_venv.sh builds it).
if [[ -z ${BASE_URL:-} && -z ${EVALSVC_VENV:-} && ! -x $repo/.venv/bin/gunicorn ]]; then
    (source "$repo/bin/_venv.sh")
fi

# bench.py stops what it starts (process groups) on exit, error, Ctrl-C or SIGTERM: signals to
# this script are forwarded to it. Should it be killed outright, the EXIT trap still stops the
# process groups it recorded in BENCH_PIDFILE.
export BENCH_PIDFILE
BENCH_PIDFILE=$(mktemp "${TMPDIR:-/tmp}/evalsvc-bench.XXXXXX")
child=
cleanup() {
    local pgid
    while read -r pgid; do
        [[ $pgid =~ ^[0-9]+$ ]] || continue
        if kill -0 -- "-$pgid" 2>/dev/null; then
            echo "run.sh: stopping leftover process group $pgid" >&2
            kill -TERM -- "-$pgid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    done <"$BENCH_PIDFILE"
    rm -f "$BENCH_PIDFILE"
}
forward() { [[ -n $child ]] && kill -TERM "$child" 2>/dev/null || true; }
trap cleanup EXIT
trap forward INT TERM HUP

# In the background so that the traps run at once (bash defers them while a foreground
# command runs); wait returns early when a trapped signal arrives, so wait again.
python3 "$here/bench.py" &
child=$!
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break
done
exit "$rc"
