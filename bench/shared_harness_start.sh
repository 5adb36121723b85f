#!/usr/bin/env bash
# evalsvc as one service of the shared side-by-side harness (../shared/bench/run.sh), started as
# production runs it: `manage.py migrate`, then bin/serve (nginx in front of gunicorn) with
# production settings, verdicts shared in Redis, default throttle rates and verdict lifetimes.
# From the harness's folder:
#
#   ./run.sh flask3 'WORKERS=3 PEER_AUTH=stub PEER_SCHEMA=indexed peer_flask/start.sh' \
#            evalsvc 'WORKERS=3 /path/to/evalsvc/bench/shared_harness_start.sh'
#
# The harness gives PORT, DATABASE_URL and USERS_SERVICE_URL. WORKERS (default 3) sets
# WEB_CONCURRENCY. Uses the project's virtualenv (.venv, built by bin/_venv.sh if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
: "${PORT:?PORT is required}" "${DATABASE_URL:?DATABASE_URL is required}"
(venv_level=base; source "$repo/bin/_venv.sh") >&2
export DJANGO_SETTINGS_MODULE=evalsvc.settings.production
export SECRET_KEY=${SECRET_KEY:-bench-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz}
export ALLOWED_HOSTS=127.0.0.1,localhost SECURE_SSL_REDIRECT=false
export CACHE_URL=${CACHE_URL:-redis://127.0.0.1:6379/14}
export HOST=127.0.0.1 WEB_CONCURRENCY=${WORKERS:-3}
cd "$repo"
.venv/bin/python manage.py migrate --noinput >&2
exec bin/serve
