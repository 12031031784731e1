#!/bin/sh
# The backup service (files/backup/): restic backups of the stack to $RESTIC_REPOSITORY, encrypted
# with the operator's password (never generated here: it must outlive the host).
#
#   kono-backup.sh backup            both databases (mysqldump run by restic: a failed dump fails the
#                                    backup), then the uploaded assets, the maintainer's SSH host keys
#                                    and config/ (the secrets, for recovery by hand); then retention
#   kono-backup.sh check             restic check, reading a seventh of the data (which, by weekday)
#   kono-backup.sh restore [PROD DEV FILES]  both databases and the files back from one backup's three
#                                    snapshots (kono/backup.py picks them), or from the latest of each
#   kono-backup.sh snapshots         the host's snapshots, as restic's JSON
#   kono-backup.sh keep SNAPSHOT...  exempt these snapshots from retention (tagged "keep")
#   kono-backup.sh last              the last success, if it went to this $RESTIC_REPOSITORY
#   kono-backup.sh loop              the service: the daily backup and the weekly check, on schedule
#
# The last success is /state/last-success ("<UTC time> <bytes read> <bytes added> <snapshot ids>",
# read by status and drift), and /state/last-repository where it went; a failure is a line in the host's audit log (.kono/audit.log) and in the service's log.
set -eu

export RESTIC_CACHE_DIR=/state/cache
PROBE_SECONDS=60
FILES="/backup/app_static /backup/maintainer_host_keys /backup/config"
RESTORED="/backup/app_static /backup/maintainer_host_keys"

# Storage credentials (KEY=value lines, e.g. AWS_ACCESS_KEY_ID=...), exported for restic only.
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ""|\#*) ;; *=*) export "${line?}" ;; esac
done < "$STORAGE_CREDENTIALS_FILE"

say() {  # to stderr and, from a `docker exec` run, to the service's log too (PID 1's stderr)
    echo "kono-backup: $*" >&2
    if [ "$$" != 1 ]; then echo "kono-backup: $*" > /proc/1/fd/2 2>/dev/null || true; fi
}

audit() {  # a JSON line in the host's audit log, beside the deploys' (and owned by the deploy user)
    printf '{"backup": "%s", "time": "%s", "detail": "%s"}\n' "$1" "$(date -u +%FT%TZ)" \
        "$(echo "$2" | tr -d '"\\' | tr '\n' ' ' | cut -c1-300)" >> /kono-state/audit.log
    chown --reference=/kono-state /kono-state/audit.log
}

sql() {  # sql SERVICE PASSWORD_FILE: the mysql client as root on that server, SQL on stdin
    MYSQL_PWD=$(cat "$2") mysql -h "$1" -uroot -N
}

summary() {  # the value of a field in restic's --json summary line
    sed -n "s/.*\"message_type\":\"summary\".*\"$1\":\"\{0,1\}\([0-9a-f]*\)\"\{0,1\}[,}].*/\1/p" "$2"
}

open_repository() {
    # restic retries an unreachable repository for 15 minutes (to ride out a network blip mid-backup);
    # at the start, a minute without an answer means it is down: fail now, loudly. Exit 10: there is
    # no repository there yet, so make it (with the operator's password).
    rc=0
    timeout "$PROBE_SECONDS" restic cat config > /dev/null 2> /state/probe.err || rc=$?
    case "$rc" in
        0) ;;
        10) restic init ;;
        124) echo "the repository did not answer within $PROBE_SECONDS s: $RESTIC_REPOSITORY" >&2; return 1 ;;
        *) cat /state/probe.err >&2; return 1 ;;
    esac
}

tally() {  # add a snapshot of the last `restic backup --json` to the run's totals
    ids="$ids $(summary snapshot_id "$out" | cut -c1-8)"
    bytes=$((bytes + $(summary total_bytes_processed "$out")))
    added=$((added + $(summary data_added_packed "$out")))  # after compression: what the repository grew by
}

backup() {
    started=$(date -u +%FT%TZ)
    tables=$(echo "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$DB_PRODUCTION_NAME';" \
        | sql db_production "$DB_PRODUCTION_PASSWORD_FILE")
    if [ "$tables" = 0 ]; then
        # A new host's empty database must not become the newest snapshot of the repository.
        say "db_production holds no tables yet: nothing to back up"
        return 0
    fi
    open_repository
    ids="" bytes=0 added=0 out=/state/restic.json
    for target in "db_production $DB_PRODUCTION_PASSWORD_FILE $DB_PRODUCTION_NAME" \
                  "db_dev $DB_DEV_PASSWORD_FILE $DB_DEV_NAME"; do
        set -- $target
        restic backup --json --host "$BACKUP_HOST" --tag kono --tag "$1" --stdin-filename "$1.sql" \
            --stdin-from-command -- sh -c 'MYSQL_PWD=$(cat "$1") exec mysqldump -h "$2" -uroot \
            --single-transaction --routines --triggers --databases "$3"' dump "$2" "$1" "$3" > "$out"
        tally
    done
    restic backup --json --host "$BACKUP_HOST" --tag kono --tag files $FILES > "$out"
    tally
    # Retention keeps the newest backup of a day (week, month); one an operator tagged "keep" stays.
    restic forget --prune --host "$BACKUP_HOST" --group-by host,tags --keep-daily "$KEEP_DAILY" \
        --keep-weekly "$KEEP_WEEKLY" --keep-monthly "$KEEP_MONTHLY" --keep-tag keep > /dev/null
    echo "$started $bytes $added$ids" > /state/last-success.new
    echo "$RESTIC_REPOSITORY" > /state/last-repository
    mv /state/last-success.new /state/last-success
    say "backup done: $bytes bytes read, $added bytes added to the repository, snapshots$ids"
}

check() {
    restic check --read-data-subset="$(( $(date -u +%u) ))/7"
}

restore() {
    if [ $# -eq 3 ]; then
        prod=$1 dev=$2 files=$3
    elif [ $# -eq 0 ]; then
        prod=latest dev=latest files=latest
    else
        echo "usage: kono-backup.sh restore [DB_PRODUCTION_SNAPSHOT DB_DEV_SNAPSHOT FILES_SNAPSHOT]" >&2
        return 2
    fi
    tables=$(echo "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$DB_PRODUCTION_NAME';" \
        | sql db_production "$DB_PRODUCTION_PASSWORD_FILE")
    if [ "$tables" != 0 ] && [ "${KONO_RESTORE_FORCE:-}" != yes ]; then
        say "refusing to restore: db_production already holds $tables tables in $DB_PRODUCTION_NAME (--force loads over them)"
        return 3
    fi
    for target in "db_production $DB_PRODUCTION_PASSWORD_FILE $prod" "db_dev $DB_DEV_PASSWORD_FILE $dev"; do
        set -- $target
        # Through a file, not a pipe: a failed dump must fail the restore (sh has no pipefail).
        restic dump --host "$BACKUP_HOST" --tag "$1" "$3" "/$1.sql" > /state/restore.sql
        sql "$1" "$2" < /state/restore.sql
        rm -f /state/restore.sql
        echo "kono-backup: restored $1"
    done
    includes=""
    for path in $RESTORED; do includes="$includes --include $path"; done
    restic restore --host "$BACKUP_HOST" --tag files "$files" --target / $includes
    echo "kono-backup: restored$(for path in $RESTORED; do printf ' %s' "${path#/backup/}"; done)"
}

this_repository() {  # the last success went to $RESTIC_REPOSITORY (one recorded before this file existed did)
    [ ! -e /state/last-repository ] || [ "$(cat /state/last-repository)" = "$RESTIC_REPOSITORY" ]
}

last() {  # what status and drift read: a success in another repository is none in this one
    if this_repository; then cat /state/last-success 2>/dev/null || true; fi
}

run() {  # run STEP: the step, its failure said in the log and the audit log (and retried hourly)
    if output=$("$1" 2>&1); then
        [ -z "$output" ] || echo "$output" >&2
        rm -f "/state/failed.$1"
    else
        echo "$output" >&2
        say "$1 FAILED"
        audit "$1 failed" "$(echo "$output" | tail -n 3)"
        date -u +%FT%TZ > "/state/failed.$1"
        return 1
    fi
}

due() {  # due SCHEDULE DATE_FORMAT NAME: it is the schedule's minute, and NAME did not run today
    [ "$(date -u +"$2" | tr 'A-Z' 'a-z')" = "$1" ] && [ "$(cat "/state/ran.$3" 2>/dev/null)" != "$(date -u +%F)" ]
}

case "${1:-}" in
    backup|check) run "$1" ;;
    last) last ;;
    restore) shift; restore "$@" ;;
    snapshots) restic snapshots --json --host "$BACKUP_HOST" --tag kono ;;
    keep) shift; restic tag --add keep "$@" ;;
    loop)
        mkdir -p /state
        echo $$ > /state/loop.pid
        trap 'exit 0' TERM INT
        # A host without a successful backup yet (new, just restored, or given another repository)
        # gets one at once, and one whose last backup failed gets another; then every hour until one succeeds (a new host's
        # empty database is skipped: nothing to keep yet).
        # First the databases must be up (they start beside this service).
        tries=0
        until MYSQL_PWD=$(cat "$DB_PRODUCTION_PASSWORD_FILE") mysqladmin -h db_production -uroot ping > /dev/null 2>&1 \
                || [ "$tries" -ge 60 ]; do
            sleep 5
            tries=$((tries + 1))
        done
        ticks=0
        while :; do
            if { [ ! -s /state/last-success ] || [ -e /state/failed.backup ] || ! this_repository; } \
                    && [ $((ticks % 120)) = 0 ]; then
                run backup || true
            fi
            ticks=$((ticks + 1))
            sleep 30 &
            wait $!
            if due "$BACKUP_SCHEDULE" %H:%M backup; then
                date -u +%F > /state/ran.backup
                run backup || true
            fi
            if due "$BACKUP_CHECK_SCHEDULE" "%a %H:%M" check; then
                date -u +%F > /state/ran.check
                run check || true
            fi
        done
        ;;
    *) echo "usage: kono-backup.sh backup | check | restore [PROD DEV FILES] | snapshots | keep SNAPSHOT... | last | loop" >&2; exit 2 ;;
esac
