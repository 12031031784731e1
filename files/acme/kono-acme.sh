#!/bin/sh
# The acme service's script (mounted read-only at /kono): certificates from an ACME CA by HTTP-01
# with lego, the challenge files in the webroot nginx serves at /.well-known/acme-challenge/.
#
#   kono-acme.sh issue          a certificate for $ACME_DOMAINS, unless one for exactly those is installed
#   kono-acme.sh renew [DAYS]   a new certificate when fewer than DAYS (default 30) days remain
#   kono-acme.sh check [DAYS]   one check now (issue, or renew when fewer than DAYS days remain),
#                               its result recorded for the metrics service: the loop's twice a day
#   kono-acme.sh loop           the service: a check twice a day
#   kono-acme.sh current        says "current" when the installed certificate is for $ACME_DOMAINS
#                               from $ACME_DIRECTORY_URL's CA, else "stale" (the deploy reads it)
#
# lego keeps its account and certificates in /acme; the one nginx serves is copied to /certificates
# (certificate, private_key, and https.conf, which turns nginx's HTTPS server on). nginx notices and
# reloads itself (files/nginx-entrypoint/kono-nginx.sh).
set -eu

LEGO=/lego                   # where the official goacme/lego image has it (not on PATH)
RENEW_DAYS=30                # Let's Encrypt's advice for its 90-day certificates
CHECK_SECONDS=43200          # twice a day
NAME=$(echo "$ACME_DOMAINS" | cut -d' ' -f1)   # lego names the files after the first domain
ISSUED_FOR=/acme/kono-domains                   # the domains of the installed certificate
ISSUED_BY=/acme/kono-directory                  # and the CA's directory it came from

run_lego() {  # run_lego COMMAND [its options]
    command=$1
    shift
    options="$*"
    set -- --path /acme --server "$ACME_DIRECTORY_URL" --accept-tos --email "$ACME_EMAIL" \
        --http --http.webroot /webroot
    for domain in $ACME_DOMAINS; do
        set -- "$@" --domains "$domain"
    done
    # shellcheck disable=SC2086  # options are plain words
    "$LEGO" "$@" "$command" $options
}

install_certificate() {
    crt=/acme/certificates/$NAME.crt
    key=/acme/certificates/$NAME.key
    if cmp -s "$crt" /certificates/certificate && cmp -s "$key" /certificates/private_key; then
        return 0
    fi
    umask 077
    cp "$key" /certificates/.private_key.new &&
        cp "$crt" /certificates/.certificate.new &&
        mv -f /certificates/.private_key.new /certificates/private_key &&
        mv -f /certificates/.certificate.new /certificates/certificate &&
        echo "include conf.d/https.server;" > /certificates/.https.conf.new &&
        mv -f /certificates/.https.conf.new /certificates/https.conf || return 1
    echo "kono-acme: installed the certificate for $ACME_DOMAINS; nginx reloads within seconds"
}

issued_here() {  # the installed certificate is for these domains, from this CA (one installed before
                 # the CA was recorded counts as this CA's)
    [ "$(cat "$ISSUED_FOR" 2>/dev/null)" = "$ACME_DOMAINS" ] &&
        { [ ! -e "$ISSUED_BY" ] || [ "$(cat "$ISSUED_BY")" = "$ACME_DIRECTORY_URL" ]; }
}

issue() {
    if issued_here && [ -s /certificates/certificate ]; then
        install_certificate
        return 0
    fi
    # `|| return 1` on each step: the loop runs this as a condition, where `set -e` does not stop it.
    run_lego run || return 1
    echo "$ACME_DOMAINS" > "$ISSUED_FOR" || return 1
    echo "$ACME_DIRECTORY_URL" > "$ISSUED_BY" || return 1
    install_certificate
}

renew() {
    # No random sleep: this loop's phase is the container's start time, already spread out.
    run_lego renew --days "${1:-$RENEW_DAYS}" --no-random-sleep || return 1
    install_certificate
}

check() {  # check [DAYS]
    if issued_here; then renew "${1:-$RENEW_DAYS}"; else issue; fi
}

renewal_fact() {  # what the metrics service serves (monitoring = True; names: kono/monitoring.py)
    echo "kono_certificate_renewal_failing $1" > /acme/metrics.new && mv -f /acme/metrics.new /acme/metrics
}

recorded_check() {  # recorded_check [DAYS]
    if check "$@"; then
        renewal_fact 0
    else
        renewal_fact 1
        echo "kono-acme: the check failed (above)" >&2
        return 1
    fi
}

case "${1:-}" in
    issue) issue ;;
    renew) renew "${2:-$RENEW_DAYS}" ;;
    check) recorded_check "${2:-$RENEW_DAYS}" ;;
    current) if issued_here && [ -s /certificates/certificate ]; then echo current; else echo stale; fi ;;
    loop)
        echo $$ > /acme/kono-loop.pid
        trap 'exit 0' TERM INT  # as PID 1, stop at once (the sleep is waited for, so this runs)
        # The deploy issues the first certificate; from here, a check every 12 hours.
        while :; do
            sleep "$CHECK_SECONDS" &
            wait $!
            recorded_check || echo "kono-acme: next try in $CHECK_SECONDS s" >&2
        done
        ;;
    *) echo "usage: kono-acme.sh issue | renew [DAYS] | check [DAYS] | current | loop" >&2; exit 2 ;;
esac
