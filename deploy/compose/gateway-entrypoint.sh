#!/bin/sh
# The gateway container's start: a seed on the first start (in the volume), the gateway's keys
# printed on every start (give them to your edges), then the command (cairn gateway run).
set -eu
DIR=/var/lib/cairn-gateway
if [ ! -f "$DIR/gateway.seed" ]; then
    # also writes a commented gateway.toml there; the one in use is /etc/cairn/gateway.toml
    cairn gateway init "$DIR"
fi
python -c '
import sys
from cairn_edge.keys import load_seed, noise_key_pair
from cairn_gateway.cli import watermark_key_pair
seed = load_seed(sys.argv[1])
print("gateway key (edges: [replication].gateways):", noise_key_pair(seed).public_key.hex())
print("watermark key (edges: [dht].watermarks):", watermark_key_pair(seed).public_key.hex())
' "$DIR/gateway.seed"
exec "$@"
