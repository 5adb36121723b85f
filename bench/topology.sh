#!/usr/bin/env bash
# evalsvc scaled out on one machine, on loopback, built from real parts, checked and measured
# (docs/scaling.md, "The topology, run"):
#
#   HAProxy (load balancer, JSON errors, /health checks)
#     -> two evalsvc instances, each bin/serve (nginx + gunicorn) with production settings
#          -> PgBouncer (transaction mode) -> PostgreSQL 15 primary (a cluster of its own)
#          -> PostgreSQL 15 streaming replica (pg_basebackup -R, recovery_min_apply_delay)
#          -> Redis (verdicts, throttles, read-your-writes pins shared by both instances)
#          -> a users service stand-in (bench/fake_users.py)
#
#   bench/topology.sh            the full run (about 3-4 minutes)
#   bench/topology.sh --short    the same checks with smaller loads (about 2 minutes): what CI runs
#
# Every part gets a fresh port and lives in a temporary directory; the machine's own PostgreSQL
# cluster, Redis and services are not touched. Prints each check with PASS or FAIL and the load
# figures, stops everything it started (by pid, on any exit) and exits 1 if a check failed.
# Installs its Debian packages (pgbouncer, haproxy, nginx, redis-server, wrk, curl) with apt-get
# when they are missing and it runs as root; needs PostgreSQL 15's server binaries
# (postgresql-15, PG_BIN=/usr/lib/postgresql/15/bin). As root, PostgreSQL and PgBouncer run as
# the user postgres.
#
# Settings (environment): PG_BIN, REPLICA_DELAY (2s: recovery_min_apply_delay), WORKERS (3 per
# instance), LOAD_CONNECTIONS (wrk -c, 32), KEEP_RUN=1 (keep the run directory with every log).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

mode=full
case ${1:-} in
    "") ;;
    --short) mode=short ;;
    *) echo "usage: bench/topology.sh [--short]" >&2; exit 2 ;;
esac
if [[ $mode == short ]]; then
    users=1000 exercises=10 load_seconds=4 warmup_seconds=2 fault_threads=6
else
    users=10000 exercises=20 load_seconds=10 warmup_seconds=3 fault_threads=8
fi
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
replica_delay=${REPLICA_DELAY:-2s}
workers=${WORKERS:-3}
load_connections=${LOAD_CONNECTIONS:-32}
started_at=$SECONDS
say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }

# --- Debian packages --------------------------------------------------------------------------
missing=()
for pair in pgbouncer:pgbouncer haproxy:haproxy nginx:nginx-light redis-server:redis-server \
    wrk:wrk curl:curl psql:postgresql-client-15 setpriv:util-linux; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ -x $pg_bin/postgres && -x $pg_bin/pg_basebackup ]] || missing+=(postgresql-15)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "topology: installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        say "topology: missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
venv_level=base
source bin/_venv.sh  # the project's virtualenv: gunicorn, psycopg (the checks use it too)

# --- processes, by pid, stopped on any exit ---------------------------------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/evalsvc-topology.XXXXXX")
chmod 711 "$run"  # PostgreSQL's and PgBouncer's user and nginx's workers reach their files
mkdir -p "$run/logs" "$run/sock"
declare -A name_of stop_signal
order=()
start() {  # NAME SIGNAL CMD...: CMD in a process group of its own, logging to logs/NAME.log
    local name=$1 signal=$2
    shift 2
    setsid "$@" >"$run/logs/$name.log" 2>&1 </dev/null &
    local pid=$!
    name_of[$pid]=$name stop_signal[$pid]=$signal
    order+=("$pid")
    declare -g "pid_$name=$pid"
}
stop() {  # PID: its stop signal to the process group, SIGKILL after 20 s
    local pid=$1 target=-$1
    [[ ${stop_signal[$pid]} == INT ]] && target=$pid  # PostgreSQL: fast shutdown by the postmaster
    kill -"${stop_signal[$pid]}" -- "$target" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-$pid" 2>/dev/null; then
        say "topology: ${name_of[$pid]} ($pid) did not stop in 20 s: SIGKILL" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
current=  # the process group run_fg waits for
run_fg() {  # CMD...: CMD in a process group of its own, waited for in a way a signal interrupts
    setsid "$@" &
    current=$!
    local status=0
    wait "$current" || status=$?
    current=
    return "$status"
}
cleanup() {
    local status=$? i
    trap - EXIT INT TERM HUP
    if [[ -n $current ]]; then kill -TERM -- "-$current" 2>/dev/null || true; fi
    for ((i = ${#order[@]} - 1; i >= 0; i--)); do stop "${order[i]}"; done
    for pid in "${order[@]}"; do
        if kill -0 -- "-$pid" 2>/dev/null; then say "topology: LEFT RUNNING: ${name_of[$pid]} ($pid)" >&2; status=1; fi
    done
    if [[ ${KEEP_RUN:-0} == 1 || $status != 0 ]]; then
        say "topology: logs kept in $run/logs"
    else
        rm -rf "$run"
    fi
    say "topology: everything stopped ($((SECONDS - started_at)) s)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

as_pg=()  # PostgreSQL and PgBouncer refuse to run as root
if [[ $(id -u) == 0 ]]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # WHAT SECONDS CMD...: until CMD succeeds
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    say "topology: $what did not come up in $seconds s" >&2
    return 1
}
mark() { echo "$1 $EPOCHREALTIME" >>"$run/marks"; }
checks() { run_fg python bench/topology_checks.py "$@"; }

primary_port=$(free_port) replica_port=$(free_port) bouncer_port=$(free_port)
redis_port=$(free_port) users_port=$(free_port) app_a_port=$(free_port) app_b_port=$(free_port)
lb_port=$(free_port)
admin_url=postgres://postgres@127.0.0.1:$primary_port/postgres
primary_url=postgres://evalsvc@127.0.0.1:$primary_port/evalsvc  # direct: migrations, checks
bouncer_url=postgres://evalsvc@127.0.0.1:$bouncer_port/evalsvc  # the instances' DATABASE_URL
replica_url=postgres://evalsvc@127.0.0.1:$replica_port/evalsvc
base=http://127.0.0.1:$lb_port
say "topology: $mode run, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; run directory $run"

# --- PostgreSQL primary and streaming replica -------------------------------------------------
step "PostgreSQL 15 primary (:$primary_port) and streaming replica (:$replica_port, recovery_min_apply_delay=$replica_delay)"
install -d -m 700 "$run/primary" "$run/replica"
if [[ $(id -u) == 0 ]]; then chown postgres: "$run/primary" "$run/replica" "$run/sock"; fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$run/primary" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >"$run/logs/initdb.log"
pg_settings=(-c listen_addresses=127.0.0.1 -c "unix_socket_directories=$run/sock"
    -c max_connections=200 -c wal_level=replica -c max_wal_senders=5 -c hot_standby=on
    -c log_min_messages=warning -c log_line_prefix='%m [%p] ')
start primary INT "${as_pg[@]}" "$pg_bin/postgres" -D "$run/primary" -c port="$primary_port" "${pg_settings[@]}"
wait_for "the primary" 30 pg_isready -q -h 127.0.0.1 -p "$primary_port"
# The application's role. Its statement and lock deadlines are set on the server: PgBouncer
# (1.18) does not pass the `options` startup parameter that sets them on a direct connection.
psql -X -q -v ON_ERROR_STOP=1 "$admin_url" <<'SQL'
CREATE ROLE evalsvc LOGIN;
ALTER ROLE evalsvc SET statement_timeout = '5s';
ALTER ROLE evalsvc SET lock_timeout = '5s';
CREATE DATABASE evalsvc OWNER evalsvc;
SQL

export DJANGO_SETTINGS_MODULE=evalsvc.settings.production
export SECRET_KEY=topology-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGH
export ALLOWED_HOSTS=127.0.0.1,localhost SECURE_SSL_REDIRECT=false LOG_FORMAT=json
t0=$SECONDS
DATABASE_URL=$primary_url run_fg python manage.py migrate --noinput >"$run/logs/migrate.log"
staff_token=$(DATABASE_URL=$primary_url python manage.py create_service_token topology-grader |
    sed -n 's/.*Authorization: Token //p')
# The seed's layout (bench/seed.sql): id = (exercise-1)*users + user, one applied attempt each.
psql -X -q -v ON_ERROR_STOP=1 -v users="$users" -v exercises="$exercises" "${admin_url%/*}/evalsvc" <<'SQL'
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
SELECT id, user_id, exercise_id, correct, updated_at, updated_at, 'topology-seed', NULL, true, true
FROM scores ORDER BY id;
COMMIT;
VACUUM (ANALYZE);
CHECKPOINT;
SQL
say "migrated and seeded $((users * exercises)) scores ($users users x $exercises exercises) in $((SECONDS - t0)) s"

"${as_pg[@]}" "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$run/replica" \
    -R -X stream -c fast --no-sync
start replica INT "${as_pg[@]}" "$pg_bin/postgres" -D "$run/replica" -c port="$replica_port" "${pg_settings[@]}" \
    -c recovery_min_apply_delay="$replica_delay"
wait_for "the replica" 60 psql -X -Atq "$replica_url" -c 'SELECT 1 FROM scores LIMIT 1'
say "replica streaming: $(psql -X -Atq "$admin_url" -c "SELECT application_name || ' ' || state || ', sync ' || sync_state FROM pg_stat_replication")"

# --- PgBouncer, Redis, the users service ------------------------------------------------------
step "PgBouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) (:$bouncer_port, transaction mode), Redis (:$redis_port), users service (:$users_port)"
echo '"evalsvc" ""' >"$run/userlist.txt"
cat >"$run/pgbouncer.ini" <<INI
[databases]
evalsvc = host=127.0.0.1 port=$primary_port dbname=evalsvc

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $run/userlist.txt
pool_mode = transaction
; Clients: 2 instances x ($workers API workers + the ops process's threads that touch the
; database, up to 16). A transaction is short, so far fewer server connections serve them.
max_client_conn = 500
default_pool_size = 20
reserve_pool_size = 5
server_lifetime = 3600
server_idle_timeout = 600
; Deadlines: evalsvc's connect_timeout only covers reaching PgBouncer, which accepts at once; a
; query waiting for a server connection (primary down or pool exhausted) fails after this many
; seconds instead of PgBouncer's default 120, and a failed server login is retried after 1 s
; (default 15) once the primary is back.
query_wait_timeout = 5
server_connect_timeout = 3
server_login_retry = 1
; evalsvc sends the startup parameter "options" (statement_timeout, lock_timeout), which
; PgBouncer 1.18 refuses: ignored here, the role's own settings (ALTER ROLE) apply instead.
ignore_startup_parameters = options,extra_float_digits
log_connections = 0
log_disconnections = 0
INI
chmod 644 "$run/pgbouncer.ini" "$run/userlist.txt"
start_bouncer() {
    start pgbouncer TERM "${as_pg[@]}" pgbouncer "$run/pgbouncer.ini"
    wait_for PgBouncer 20 psql -X -Atq "$bouncer_url" -c 'SELECT 1'
}
start_bouncer
mkdir -p "$run/redis"
start redis TERM redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$run/redis"
wait_for Redis 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$redis_port"
start users TERM python bench/fake_users.py "$users_port"
wait_for "the users service" 20 curl -fsS -o /dev/null -H 'Authorization: Bearer u1' \
    "http://127.0.0.1:$users_port/auth/status"

# --- two evalsvc instances (bin/serve) and the load balancer ----------------------------------
step "evalsvc instances a (:$app_a_port) and b (:$app_b_port), bin/serve with $workers workers each; HAProxy (:$lb_port)"
# Through PgBouncer, except the events bell's LISTEN (a session of its own, which transaction
# pooling cannot give) and the replica (no pooler in front of it here).
export DATABASE_URL=$bouncer_url DATABASE_LISTEN_URL=$primary_url DATABASE_REPLICA_URL=$replica_url
export CACHE_URL=redis://127.0.0.1:$redis_port/0 USERS_SERVICE_URL=http://127.0.0.1:$users_port
export PREPARED_STATEMENTS=false DISABLE_SERVER_SIDE_CURSORS=true CONN_MAX_AGE=60
export REPLICA_STICKY_SECONDS=5 TRUSTED_PROXY_COUNT=1 METRICS_TOKEN=topology-metrics
export THROTTLE_RATE_USER=100000000/min THROTTLE_RATE_ANON=100000000/min
export WEB_CONCURRENCY=$workers HOST=127.0.0.1
export TMPDIR=$run  # bin/serve's run directory: removed with this one even after a SIGKILL
start app_a TERM env PORT="$app_a_port" bin/serve
start app_b TERM env PORT="$app_b_port" bin/serve
for port in "$app_a_port" "$app_b_port"; do
    wait_for "evalsvc on :$port" 60 curl -fsS -o /dev/null "http://127.0.0.1:$port/ready"
done
for code in 502 503 504; do  # HAProxy's own errors in the API's shape (a 503 with Retry-After)
    body='{"detail": "No instance of the service answered; retry later."}'
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nCache-Control: no-store\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "${#body}" "$body" >"$run/haproxy-$code.http"
done
cat >"$run/haproxy.cfg" <<CFG
global
    maxconn 4000
    stats socket $run/haproxy.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 65s
    timeout server 65s        # GET /events?wait= holds up to 30 s
    timeout http-keep-alive 10s
    option forwardfor         # evalsvc: TRUSTED_PROXY_COUNT=1
    # A new connection to the instance for each request: one to an instance that died is
    # refused, and the request goes to the other (redispatch) instead of being lost on a
    # kept-alive connection that the dead instance can no longer answer.
    option http-server-close
    retries 3
    option redispatch 1       # a refused connection is retried on the other instance
    # A request an instance dropped unanswered is retried elsewhere only if it is a read
    # (disable-l7-retry below): a write is never sent twice.
    retry-on conn-failure empty-response
    errorfile 502 $run/haproxy-502.http
    errorfile 503 $run/haproxy-503.http
    errorfile 504 $run/haproxy-504.http

frontend api
    bind 127.0.0.1:$lb_port
    default_backend evalsvc

backend evalsvc
    balance roundrobin
    http-request disable-l7-retry if !METH_GET !METH_HEAD
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
    http-response set-header X-Served-By %s
    server a 127.0.0.1:$app_a_port check
    server b 127.0.0.1:$app_b_port check
CFG
haproxy -c -q -f "$run/haproxy.cfg" || haproxy -c -f "$run/haproxy.cfg"
start haproxy TERM haproxy -db -f "$run/haproxy.cfg"
wait_for HAProxy 20 curl -fsS -o /dev/null "$base/ready"
set_server() { checks haproxy "$run/haproxy.sock" "set server evalsvc/$1 state $2"; }

# --- checks -----------------------------------------------------------------------------------
failed=0
check() { "$@" || failed=1; }
parts_running() {  # NAME...: each part's processes are still there (nothing else stopped them)
    local name pid
    for name in "$@"; do
        pid=pid_$name
        if ! kill -0 -- "-${!pid}" 2>/dev/null; then
            say "FAIL  $name is not running any more: stopped by something other than this script"
            failed=1
        fi
    done
}
everything=(primary replica pgbouncer redis users app_a app_b haproxy)
common=(--base "$base" --staff-token "$staff_token" --users "$users" --exercises "$exercises"
    --primary "$primary_url" --replica "$replica_url")

step "settings on each path to the database"
check checks settings --bouncer "$bouncer_url" --replica "$replica_url" --primary "$primary_url"

step "smoke: every endpoint once per caller kind, through the load balancer"
check checks smoke "${common[@]}" --metrics-token "$METRICS_TOKEN"

step "read-your-writes under real lag (recovery_min_apply_delay=$replica_delay)"
check checks read-your-writes "${common[@]}" --lag "$replica_delay"

step "events long poll (GET /events?wait=): one waiting on each instance, woken by one write"
check checks events "${common[@]}" --instances "http://127.0.0.1:$app_a_port,http://127.0.0.1:$app_b_port"

step "load: wrk, bench/wrk/mixed.lua (40 % GET /scores/<id>, 40 % GET /scores/user, 20 % PATCH /scores)"
groups="app=$pid_app_a,$pid_app_b pg=$pid_primary,$pid_replica pgbouncer=$pid_pgbouncer haproxy=$pid_haproxy redis=$pid_redis users=$pid_users"
wrk_load() {  # LABEL URL
    checks wrk --base "$2" --label "$1" --seconds "$load_seconds" --warmup "$warmup_seconds" \
        --connections "$load_connections" --users "$users" --exercises "$exercises" --groups "$groups"
}
set_server b maint
check wrk_load "1 instance, no balancer  ($workers workers)" "http://127.0.0.1:$app_a_port"
check wrk_load "1 instance behind HAProxy ($workers workers)" "$base"
set_server b ready
wait_for "instance b back in the balancer" 10 checks haproxy-up "$run/haproxy.sock" b
check wrk_load "2 instances behind HAProxy ($((2 * workers)) workers)" "$base"
parts_running "${everything[@]}"

fault_load() {  # NAME SECONDS: the checks' own load (every answer recorded) in the background
    start "load_$1" TERM python bench/topology_checks.py load "${common[@]}" --seconds "$2" \
        --threads "$fault_threads" --out "$run/$1.jsonl"
    load_pid=$!
}

step "the replica stopped mid-load: reads fall back to the primary"
fault_load replica 14
run_fg sleep 3
mark replica_stop
stop "$pid_replica"
mark replica_stopped
run_fg sleep 5
start replica INT "${as_pg[@]}" "$pg_bin/postgres" -D "$run/replica" -c port="$replica_port" "${pg_settings[@]}" \
    -c recovery_min_apply_delay="$replica_delay"
wait_for "the replica" 60 psql -X -Atq "$replica_url" -c 'SELECT 1'
mark replica_started
check wait "$load_pid"
check checks verify replica "${common[@]}" --log "$run/replica.jsonl" --marks "$run/marks"
parts_running "${everything[@]}"

step "PgBouncer restarted mid-load: 503s with Retry-After while it is down, then recovery"
app_pids_before="$(pgrep -g "$pid_app_a" | sort | tr '\n' ' ')$(pgrep -g "$pid_app_b" | sort | tr '\n' ' ')"
fault_load pgbouncer 16
run_fg sleep 3
mark bouncer_stop
stop "$pid_pgbouncer"
mark bouncer_stopped
run_fg sleep 3
start_bouncer
mark bouncer_started
groups="app=$pid_app_a,$pid_app_b pg=$pid_primary,$pid_replica pgbouncer=$pid_pgbouncer haproxy=$pid_haproxy redis=$pid_redis users=$pid_users"
check wait "$load_pid"
check checks verify pgbouncer "${common[@]}" --log "$run/pgbouncer.jsonl" --marks "$run/marks"
parts_running "${everything[@]}"
app_pids_after="$(pgrep -g "$pid_app_a" | sort | tr '\n' ' ')$(pgrep -g "$pid_app_b" | sort | tr '\n' ' ')"
if [[ $app_pids_before == "$app_pids_after" ]]; then
    say "PASS  pgbouncer: evalsvc was not restarted (the same $(wc -w <<<"$app_pids_after") processes before and after)"
else
    say "FAIL  pgbouncer: evalsvc processes changed: before [$app_pids_before] after [$app_pids_after]"
    failed=1
fi

step "one instance killed mid-load (SIGKILL to every process of instance b)"
fault_load instance 10
run_fg sleep 3
mark instance_kill
{ kill -KILL -- "-$pid_app_b"; wait "$pid_app_b"; } 2>/dev/null || true  # no "Killed" notice
mark instance_killed
check wait "$load_pid"
check checks verify instance "${common[@]}" --log "$run/instance.jsonl" --marks "$run/marks" \
    --threads "$fault_threads"
parts_running primary replica pgbouncer redis users app_a haproxy

step "result"
if ((failed)); then
    say "FAILED: at least one check failed (logs: $run/logs)"
    KEEP_RUN=1
    exit 1
fi
say "ALL CHECKS PASSED ($mode run, $((SECONDS - started_at)) s before teardown)"
