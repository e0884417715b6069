#!/bin/sh
# check_cmd of the reload example: `nginx -t` on the staged file itself, not on
# the live config (which still holds the old file until the swap). The staged
# server block is wrapped in the smallest main config that can hold it, in a
# temporary directory, so the check writes nothing else and needs no root.
#   check_cmd = "sh check-nginx.sh {{.src}}"
set -eu
stage=$1
# nginx reads a relative include from the config's directory: make it absolute.
case $stage in /*) ;; *) stage=$PWD/$stage ;; esac
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/nginx.conf" <<CONF
error_log stderr;
pid $dir/nginx.pid;
events {}
http {
    access_log off;
    include "$stage";
}
CONF
nginx -q -t -e stderr -p "$dir" -c "$dir/nginx.conf"
