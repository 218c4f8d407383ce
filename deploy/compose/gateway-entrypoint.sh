#!/bin/sh
# The gateway container's start: a seed on the first start (in the volume), the gateway's keys
# printed on every start (give them to your edges), then the command (cairn gateway run).
set -eu
DIR=/var/lib/cairn-gateway
if [ ! -f "$DIR/gateway.seed" ]; then
    # also writes a commented gateway.toml there; the one in use is /etc/cairn/gateway.toml
    cairn gateway init "$DIR"
fi
# the API's read token from the environment (compose.yaml: .env), the admin token kept
(umask 077 && printf '%s\n' "${CAIRN_API_READ_TOKEN:?}" > "$DIR/api-read.token")
python -c '
import sys
from pathlib import Path
from cairn.fleet.identity import load_seed, noise_key_pair, watermark_key_pair
from cairn_gateway.auth import new_token
seed = load_seed(sys.argv[1])
print("gateway key (edges: [replication].gateways):", noise_key_pair(seed).public_key.hex())
print("watermark key (edges: [dht].watermarks):", watermark_key_pair(seed).public_key.hex())
admin = Path(sys.argv[2])
if not admin.exists():
    new_token(admin)
print("API admin token in the gateway-data volume:", admin)
' "$DIR/gateway.seed" "$DIR/api-admin.token"
exec "$@"
