#!/usr/bin/env sh
# put.sh KEY VALUE [ENDPOINT]: sets one etcd key, with etcdctl when it is
# installed, else through etcd's JSON gateway with curl.
set -eu
key=$1 value=$2 endpoint=${3:-${ETCDCTL_ENDPOINTS:-http://127.0.0.1:2379}}
if command -v etcdctl >/dev/null 2>&1; then
  ETCDCTL_API=3 etcdctl --endpoints "$endpoint" put "$key" "$value"
else
  b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
  curl -sS "$endpoint/v3/kv/put" -d "{\"key\":\"$(b64 "$key")\",\"value\":\"$(b64 "$value")\"}"
  echo
fi
