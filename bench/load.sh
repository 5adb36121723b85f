#!/usr/bin/env bash
# Load held: evalsvc under production settings (gunicorn with the project's config, PostgreSQL,
# Redis) takes the platform's mix (wrk/mixed.lua: 80 % reads, 20 % upserts) for a bounded time
# and must answer every request with a 2xx. Prints wrk's figures (req/s, p50, p99, errors) and
# exits 1 on any error (non-2xx or socket error). See docs/reliability.md.
#
#   bench/load.sh           60 s, 1,000,000 seeded scores (10000 users x 100 exercises)
#   bench/load.sh short     10 s, 10,000 scores (1000 x 10): what .ci/run runs
#   bench/load.sh sweep     20 s at each of LOAD_SWEEP connection counts (4 8 16 32 64), to find
#                           where throughput peaks (the default LOAD_CONNECTIONS)
#
# Settings (environment): LOAD_DURATION, LOAD_WARMUP (s), LOAD_CONNECTIONS (64, where
# throughput peaked), LOAD_THREADS (2), LOAD_USERS, LOAD_EXERCISES (seed size), WORKERS (3),
# LOAD_PG_URL (postgres://postgres@127.0.0.1:5432), LOAD_CACHE_URL (redis://127.0.0.1:6379/11).
# Needs wrk, psql and curl. Starts everything on loopback in a scratch database, stops it and
# drops the database.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/bin/_venv.sh"

mode=${1:-full}
case $mode in
    full) ;;
    short) : "${LOAD_DURATION:=10}" "${LOAD_WARMUP:=2}" "${LOAD_USERS:=1000}" "${LOAD_EXERCISES:=10}" ;;
    sweep) : "${LOAD_DURATION:=20}" ;;
    *) echo "usage: bench/load.sh [short|sweep]" >&2; exit 2 ;;
esac
export LOAD_USERS=${LOAD_USERS:-10000} LOAD_EXERCISES=${LOAD_EXERCISES:-100}
duration=${LOAD_DURATION:-60}
warmup=${LOAD_WARMUP:-5}
connections=${LOAD_CONNECTIONS:-64}
threads=${LOAD_THREADS:-2}
pg_url=${LOAD_PG_URL:-postgres://postgres@127.0.0.1:5432}
pg_url=${pg_url%/}
db=evalsvc_load_$$
logs=$(mktemp -d "${TMPDIR:-/tmp}/evalsvc-load.XXXXXX")

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app_port=$(free_port)
users_port=$(free_port)
base=http://127.0.0.1:$app_port

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    psql -X -q "$pg_url/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

export DJANGO_SETTINGS_MODULE=evalsvc.settings.production
export SECRET_KEY=load-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKL
export DATABASE_URL=$pg_url/$db
export ALLOWED_HOSTS=127.0.0.1 SECURE_SSL_REDIRECT=false
export USERS_SERVICE_URL=http://127.0.0.1:$users_port
export CACHE_URL=${LOAD_CACHE_URL:-redis://127.0.0.1:6379/11}
export THROTTLE_RATE_USER=100000000/min THROTTLE_RATE_ANON=100000000/min
export USERS_SERVICE_CACHE_SECONDS=$((duration + warmup + 300))  # verdicts outlive the run
export HOST=127.0.0.1 PORT=$app_port WEB_CONCURRENCY=${WORKERS:-3}

echo "load: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores;" \
    "scratch database $db, ${LOAD_USERS} users x ${LOAD_EXERCISES} exercises"
psql -X -q "$pg_url/postgres" -c "CREATE DATABASE $db"
python manage.py migrate --noinput >"$logs/migrate.log"
started=$EPOCHREALTIME
# The layout of bench/seed.sql, sized: id = (exercise-1)*users + user; each score as if
# written once through the API (one applied attempt in the log).
psql -X -q -v ON_ERROR_STOP=1 -v users="$LOAD_USERS" -v exercises="$LOAD_EXERCISES" \
    "$DATABASE_URL" <<'SQL'
SELECT setseed(0.42) \g /dev/null
BEGIN;
INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at, attempts,
                    last_attempted_at, first_correct_at, first_attempt_correct,
                    attempts_to_correct)
SELECT user_id, exercise_id, correct, now(), now(), 1,
       now(), CASE WHEN correct THEN now() END, correct, CASE WHEN correct THEN 1 END
FROM (SELECT i % :users + 1 AS user_id, i / :users + 1 AS exercise_id, random() < 0.5 AS correct
      FROM generate_series(0, :users * :exercises - 1) AS i) AS seed;
INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, attempted_at, recorded_at,
                            recorded_by, attempt_id, applied, created_score)
SELECT id, user_id, exercise_id, correct, updated_at, updated_at, 'load-seed', NULL, true, true
FROM scores ORDER BY id;
COMMIT;
VACUUM (ANALYZE);
SQL
python -c "import sys, time; print(f\"load: seeded in {time.time() - float(sys.argv[1]):.1f} s\")" "$started"

setsid python bench/fake_users.py "$users_port" >"$logs/users.log" 2>&1 &
pids+=($!)
setsid gunicorn -c python:evalsvc.gunicorn --no-control-socket evalsvc.wsgi:application \
    >"$logs/gunicorn.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    curl -fsS -o /dev/null "$base/ready" 2>/dev/null && break
    sleep 0.2
done
curl -fsS -o /dev/null "$base/ready" || { tail -n 30 "$logs/gunicorn.log"; exit 1; }

# measure CONNECTIONS SECONDS: one wrk run, its figures on one line; fails on any error.
measure() {
    local out=$logs/wrk-c$1-$2s.txt result pair errors
    wrk -t"$threads" -c"$1" -d"$2"s --timeout 10s -s bench/wrk/mixed.lua "$base" >"$out"
    result=$(grep '^BENCH ' "$out")
    declare -A figure
    for pair in ${result#BENCH }; do figure[${pair%%=*}]=${pair#*=}; done
    errors=$((figure[non2xx] + figure[socket_errors]))
    printf 'load: -c%-3s %8s requests in %s s, %8s req/s, p50 %7s ms, p99 %8s ms, errors %s (non-2xx %s, socket %s)\n' \
        "$1" "${figure[requests]}" "${figure[duration_s]}" "${figure[rps]}" "${figure[p50_ms]}" \
        "${figure[p99_ms]}" "$errors" "${figure[non2xx]}" "${figure[socket_errors]}"
    if ((errors > 0)); then
        echo "load: FAILED: $errors errors; the last non-2xx in the service's log:" >&2
        grep '"status"' "$logs/gunicorn.log" | grep -v '"status": *2' | tail -n 20 >&2 || true
        return 1
    fi
}

if ((warmup > 0)); then
    wrk -t"$threads" -c"$connections" -d"$warmup"s -s bench/wrk/mixed.lua "$base" >/dev/null
fi
echo "load: wrk -t$threads -d${duration}s -s bench/wrk/mixed.lua, ${WEB_CONCURRENCY} gunicorn workers"
if [[ $mode == sweep ]]; then
    for c in ${LOAD_SWEEP:-4 8 16 32 64}; do measure "$c" "$duration"; done
else
    measure "$connections" "$duration"
fi
rm -rf "$logs"
