#!/usr/bin/env bash
# deploy/compose/check.sh: `config` check of docker-compose.yml by a real Compose client, which
# needs no Docker engine: `docker compose config -q` when the Compose v2 plugin is there, else
# Debian's docker-compose (1.29, installed with apt-get when missing). Exit 0 when valid; the
# client's complaints otherwise. Run by tests/integration/test_deploy.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
log() { printf '[compose-check] %s\n' "$*" >&2; }

if docker compose version >/dev/null 2>&1; then
    client=(docker compose)
else
    if ! command -v docker-compose >/dev/null; then
        command -v apt-get >/dev/null || { log "no Compose client and no apt-get: install docker compose"; exit 1; }
        sudo=()
        (( EUID == 0 )) || sudo=(sudo)
        apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
        log "no Compose client: installing Debian's docker-compose package"
        apt-cache show docker-compose >/dev/null 2>&1 || "${apt[@]}" update >&2
        "${apt[@]}" install -y --no-install-recommends docker-compose >&2
    fi
    client=(docker-compose)
fi
log "$("${client[@]}" version 2>/dev/null | head -n 1)"
"${client[@]}" -p segstream -f docker-compose.yml config -q
log "docker-compose.yml: valid"
