#!/bin/sh
# The nginx service's entrypoint (mounted read-only at /kono), ending in the image's own; and, as
# `kono-nginx.sh reload`, a checked reload that returns once it took effect.
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

if [ "${1:-}" = "reload" ]; then
    reload
    exit
fi

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
if [ -d /etc/nginx/tls ]; then
    (
        applied=$(tls_state)
        while sleep "${KONO_TLS_POLL_SECONDS:-5}"; do
            now=$(tls_state)
            if [ "$now" != "$applied" ] && reload; then
                applied=$now
                echo "kono-nginx: certificate changed: configuration checked, nginx reloaded" >&2
            fi
        done
    ) &
fi

exec /docker-entrypoint.sh "$@"
