#!/bin/sh
# The origin service's entrypoint (a cluster's db node; mounted read-only at /kono), ending in the
# official nginx image's own. nginx here hands the edges what lives on this node (its site:
# templates/nginx/origin.conf.j2); the certificate and key it hands out are copied from /etc/nginx/tls
# (the acme service's volume, or the provided pair's folder: files only root or the deploy user reads)
# to $KONO_TLS_COPY, readable by nginx's workers, whenever they change. `kono-origin.sh copy` copies
# now (the deploy, after an issuance).
set -eu

COPY=${KONO_TLS_COPY:?KONO_TLS_COPY is not set (kono/services.py hands it over)}

copy() {
    [ -s /etc/nginx/tls/certificate ] && [ -s /etc/nginx/tls/private_key ] || return 0
    mkdir -p -m 0755 "$COPY"
    # The key first: an edge that fetches between the two gets a pair nginx -t refuses, and tries again.
    for name in private_key certificate; do
        if ! cmp -s "/etc/nginx/tls/$name" "$COPY/$name"; then
            (umask 077 && cp "/etc/nginx/tls/$name" "$COPY/.$name.new")
            chown nginx "$COPY/.$name.new"
            mv -f "$COPY/.$name.new" "$COPY/$name"
        fi
    done
}

if [ "${1:-}" = "copy" ]; then
    copy
    exit
fi

if [ -d /etc/nginx/tls ]; then
    copy
    ( while sleep "${KONO_TLS_POLL_SECONDS:-5}"; do copy || true; done ) &
fi

exec /docker-entrypoint.sh "$@"
