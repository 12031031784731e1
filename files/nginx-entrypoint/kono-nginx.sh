#!/bin/sh
# The nginx service's entrypoint (mounted read-only at /kono), ending in the image's own; as
# `kono-nginx.sh reload`, a checked reload that returns once it took effect; and on a cluster's edge,
# as `kono-nginx.sh fetch`, the certificate and key copied from the origin service now and reloaded.
set -eu

workers() {  # the PIDs of the workers taking new connections (not those finishing after a reload)
    for process in /proc/[0-9]*; do
        if [ "$(tr -d '\000' < "$process/cmdline" 2>/dev/null)" = "nginx: worker process" ]; then
            echo "${process#/proc/}"
        fi
    done
}

reload() {
    nginx -t -q || return 1
    old=" $(workers | tr '\n' ' ') "
    nginx -s reload 2>/dev/null
    # `nginx -s reload` only signals the master: wait until workers of the new configuration (new
    # PIDs) are the ones taking connections, so what follows sees it. At most 10 s.
    tries=0
    while [ "$tries" -lt 100 ]; do
        now=$(workers)
        fresh=${now:+yes}
        for pid in $now; do
            case "$old" in *" $pid "*) fresh="" ;; esac
        done
        if [ -n "$fresh" ]; then return 0; fi
        sleep 0.1
        tries=$((tries + 1))
    done
    echo "kono-nginx: the reload did not take effect within 10 s" >&2
    return 1
}

# On a cluster's edge, $KONO_TLS_ORIGIN is where the db node's origin service hands out the certificate
# and key: copied into /etc/nginx/tls (this node's edge_tls volume) when they differ from what is
# there, where the watcher below notices them; tls/https.conf turns the HTTPS server on once there is
# a pair. Nothing changes when the origin does not answer (the node keeps serving what it has).
fetch_tls() {
    tls=/etc/nginx/tls
    for name in certificate private_key; do
        (umask 077 && curl -fsS --max-time 5 -o "$tls/.$name.fetched" "$KONO_TLS_ORIGIN$name") || return 1
    done
    for name in private_key certificate; do
        if cmp -s "$tls/.$name.fetched" "$tls/$name"; then
            rm -f "$tls/.$name.fetched"
        else
            mv -f "$tls/.$name.fetched" "$tls/$name"
        fi
    done
    if [ ! -e "$tls/https.conf" ]; then
        echo "include conf.d/https.server;" > "$tls/.https.conf.new"
        mv -f "$tls/.https.conf.new" "$tls/https.conf"
    fi
}

case "${1:-}" in
    reload) reload; exit ;;
    fetch) fetch_tls && reload; exit ;;
esac

# The official image's /var/log/nginx/access.log and error.log are symlinks to its stdout and stderr,
# and a new nginx_log volume is filled with them: put plain files in their place (the maintainer
# reads them). The site logs to stdout and stderr as well, so `docker logs` keeps working.
for log in /var/log/nginx/access.log /var/log/nginx/error.log; do
    if [ -L "$log" ]; then rm -f "$log"; fi
done

# With HTTPS, /etc/nginx/tls holds the certificate and key (installed by the acme service, or
# placed by the deploy). When they change, check the configuration and reload: the workers finish
# what they serve, no request is dropped, and no docker socket is needed. A check that fails (say,
# a new key before its certificate) is tried again on the next round.
tls_state() {
    cat /etc/nginx/tls/certificate /etc/nginx/tls/private_key /etc/nginx/tls/*.conf 2>/dev/null | cksum
}
if [ -n "${KONO_TLS_ORIGIN:-}" ]; then
    fetch_tls || echo "kono-nginx: no certificate from the origin service yet; asking again every few seconds" >&2
fi
if [ -d /etc/nginx/tls ]; then
    (
        applied=$(tls_state)
        while sleep "${KONO_TLS_POLL_SECONDS:-5}"; do
            if [ -n "${KONO_TLS_ORIGIN:-}" ]; then fetch_tls 2>/dev/null || true; fi
            now=$(tls_state)
            if [ "$now" != "$applied" ] && reload; then
                applied=$now
                echo "kono-nginx: certificate changed: configuration checked, nginx reloaded" >&2
            fi
        done
    ) &
fi

exec /docker-entrypoint.sh "$@"
