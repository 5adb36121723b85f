#!/usr/bin/env bash
# Static checks of the container and CI files (no Docker engine needed):
#   hadolint on both Dockerfiles, the compose file against the Compose specification,
#   .gitlab-ci.yml against GitLab's CI schema.
# Usage, from anywhere:  PATH=/path/to/repo/.venv/bin:$PATH docker/check.sh
# HADOLINT / CHECK_JSONSCHEMA override the tools (default: whatever PATH finds).
# One line per check; a failing check prints the tool's output and stops the script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

hadolint=${HADOLINT:-hadolint}
check_jsonschema=${CHECK_JSONSCHEMA:-check-jsonschema}

# check LABEL COMMAND...: run COMMAND quietly; "ok LABEL", or "FAIL LABEL" + its output and exit.
check() {
    local label=$1 output
    shift
    if output=$("$@" 2>&1); then
        echo "ok    $label"
    else
        echo "FAIL  $label"
        printf '%s\n' "$output"
        exit 1
    fi
}

check "hadolint docker/Dockerfile" "$hadolint" --no-color docker/Dockerfile
check "hadolint docker/db/Dockerfile" "$hadolint" --no-color docker/db/Dockerfile

# The real parser when the compose plugin is there; otherwise the Compose spec's JSON schema,
# which check-jsonschema bundles (vendor.compose-spec), so no network is needed.
if docker compose version >/dev/null 2>&1; then
    # The file requires SECRET_KEY; a placeholder is enough to parse it.
    check "docker compose config docker/compose.yml" \
        env SECRET_KEY="${SECRET_KEY:-check-only}" docker compose -f docker/compose.yml config -q
else
    check "check-jsonschema vendor.compose-spec docker/compose.yml" \
        "$check_jsonschema" --builtin-schema vendor.compose-spec docker/compose.yml
fi

check "check-jsonschema vendor.gitlab-ci .gitlab-ci.yml" \
    "$check_jsonschema" --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
