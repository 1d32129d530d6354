#!/usr/bin/env bash
# deploy/compose/init-secrets.sh: create the secret files docker-compose.yml mounts, with
# random values, unless they exist already (never overwrites). Prints where they are.
#   api_tokens.txt  membership API bearer tokens, one per line (SEGSTREAM_API_TOKENS_FILE)
#   write_keys.txt  collector write keys, `source=key` per line (SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE)
#   webhook_secret.txt  the HMAC key of the example webhook destination (destinations.yaml)
# All are git-ignored (.gitignore beside this script). Add lines to grant more clients.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rand() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
if [[ ! -s api_tokens.txt ]]; then
    printf '# one bearer token per line\n%s\n' "$(rand)" >api_tokens.txt
    echo "wrote $(pwd)/api_tokens.txt"
else
    echo "kept $(pwd)/api_tokens.txt"
fi
if [[ ! -s write_keys.txt ]]; then
    printf '# source=key per line\nweb=%s\n' "$(rand)" >write_keys.txt
    echo "wrote $(pwd)/write_keys.txt"
else
    echo "kept $(pwd)/write_keys.txt"
fi
if [[ ! -s webhook_secret.txt ]]; then
    rand >webhook_secret.txt
    echo "wrote $(pwd)/webhook_secret.txt"
else
    echo "kept $(pwd)/webhook_secret.txt"
fi
# The containers run as uid 10001 and read the files through compose secrets (bind mounts):
chmod 0644 api_tokens.txt write_keys.txt webhook_secret.txt
