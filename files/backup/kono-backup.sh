#!/bin/sh
# The backup service (files/backup/): restic backups of the stack to $RESTIC_REPOSITORY, encrypted
# with the operator's password (never generated here: it must outlive the host).
#
#   kono-backup.sh backup            both databases (mysqldump run by restic: a failed dump fails the
#                                    backup), then the uploaded assets, the maintainer's SSH host keys
#                                    and config/ (the secrets, for recovery by hand); then retention
#   kono-backup.sh check             restic check, reading a seventh of the data (which, by weekday)
#   kono-backup.sh restore [PROD DEV FILES [replay UNTIL BINLOG...]]  both databases and the files back
#                                    from one backup's three snapshots (kono/backup.py picks them), or
#                                    the latest of each; then, with "replay", db_production's binary
#                                    logs from the base's position up to UNTIL (UTC; "" for all)
#   kono-backup.sh snapshots         the host's snapshots, as restic's JSON
#   kono-backup.sh keep SNAPSHOT...  exempt these snapshots from retention (tagged "keep")
#   kono-backup.sh last              the last success, if it went to this $RESTIC_REPOSITORY
#   kono-backup.sh loop              the service: the daily backup and the weekly check, on schedule
#   kono-backup.sh ship-loop         the binlog service (point-in-time recovery): every
#                                    PITR_MAX_LAG_SECONDS / 2, db_production's binary log is rotated when
#                                    it holds a transaction and every closed one goes to the repository
#   kono-backup.sh shipped           "<UTC time everything committed before was shipped> <failing since|->"
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

restic() {  # two services share the repository: wait for the other's lock (a prune, a check) before failing
    command restic --retry-lock 2m "$@"
}

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

# -- point-in-time recovery: db_production's binary logs ------------------------------------------
# Only what MySQL 8.4 and MariaDB both have (tests/images/README.md): file names and positions, no
# GTIDs; SHOW BINARY LOGS, SHOW BINLOG EVENTS, FLUSH BINARY LOGS; the binlog client under either name.
# A timeline names one data directory's history (a row in kono_meta, kept out of the binary logs and
# of the dumps): a new host's logs restart at binlog.000001, and only a base of the same timeline
# may be carried forward by them.

binlog_tool() {  # MySQL's mysqlbinlog, or MariaDB's mariadb-binlog
    command -v mysqlbinlog || command -v mariadb-binlog
}

REPLAY_PACKET=1073741824  # max_allowed_packet for a replay: 1 GB, the largest MySQL and MariaDB accept

number() {  # number binlog.000012: 12
    expr "${1##*.}" + 0
}

binlog_sql() {  # SQL on stdin, as the shipper's replication account
    MYSQL_PWD=$(cat "$DB_BINLOG_PASSWORD_FILE") mysql -h db_production -u"$BINLOG_USER" -N
}

pitr_setup() {  # as root, not binary-logged: the shipper's account, and the server's timeline when missing
    password=$(cat "$DB_BINLOG_PASSWORD_FILE")
    # FLUSH BINARY LOGS needs RELOAD: the shipper rotates the log itself rather than hold root's password.
    sql db_production "$DB_PRODUCTION_PASSWORD_FILE" <<SQL
SET SESSION sql_log_bin = 0;
CREATE DATABASE IF NOT EXISTS kono_meta;
CREATE TABLE IF NOT EXISTS kono_meta.timeline (only_row TINYINT PRIMARY KEY, id CHAR(16) NOT NULL, first_log INT NOT NULL);
CREATE USER IF NOT EXISTS '$BINLOG_USER'@'%' IDENTIFIED BY '$password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO '$BINLOG_USER'@'%';
GRANT SELECT ON kono_meta.timeline TO '$BINLOG_USER'@'%';
SQL
    [ $? = 0 ] || { unset password; return 1; }
    unset password
    if [ "$(echo "SELECT COUNT(*) FROM kono_meta.timeline;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE")" = 0 ]; then
        # A timeline starts on a new binary log: what came before (the first start's accounts, which
        # MariaDB logs with their passwords as written) never leaves the host.
        echo "FLUSH BINARY LOGS;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE" || return 1
        first=$(echo "SHOW BINARY LOGS;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE" | tail -n 1 | cut -f1)
        printf "SET SESSION sql_log_bin = 0; INSERT IGNORE INTO kono_meta.timeline VALUES (1, '%s', %s);\n" \
            "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" "$(number "$first")" \
            | sql db_production "$DB_PRODUCTION_PASSWORD_FILE" || return 1
    fi
}

position_option() {  # how this mysqldump writes the binary log position into a dump, as a comment
    # MySQL 8.4: --source-data (--master-data is deprecated); MariaDB: --master-data only.
    if mysqldump --help 2>/dev/null | grep -q -e '--source-data'; then echo --source-data=2; else echo --master-data=2; fi
}

base_due() {  # base_due TIMELINE: db_production's dump is due (every PITR_FULL_BACKUP_DAYS days)
    [ -s /state/last-base ] || return 0
    read -r at timeline repository < /state/last-base
    [ "$timeline" = "$1" ] && [ "$repository" = "$RESTIC_REPOSITORY" ] || return 0
    # An hour's slack: the backup that runs at the same minute N days later is due.
    [ $(( $(date +%s) - at )) -ge $(( PITR_FULL_BACKUP_DAYS * 86400 - 3600 )) ]
}

# Every binary log starts with these (MySQL: Format_desc, Previous_gtids; MariaDB: Format_desc,
# Gtid_list, Binlog_checkpoint, which it may also add later; Start_encryption when encrypted). A
# log with any other event holds a transaction.
HEADER_EVENTS="Format_desc Previous_gtids Gtid_list Binlog_checkpoint Start_encryption"

holds_transactions() {  # SHOW BINLOG EVENTS rows (tab-separated) on stdin
    awk -F '\t' -v header=" $HEADER_EVENTS " 'index(header, " " $3 " ") == 0 { found = 1 } END { exit !found }'
}

ship() {  # one round: what was committed before it started is in the repository when it ends
    # `|| return 1` on each step, as in backup: a failed round must record nothing.
    started=$(date -u +%FT%TZ)
    set -- $(echo "SELECT id, first_log FROM kono_meta.timeline;" | binlog_sql)
    [ $# = 2 ] || { echo "no timeline yet (the backup service makes it, and this account)" >&2; return 1; }
    timeline=$1 first=$2
    newest=$(echo "SHOW BINARY LOGS;" | binlog_sql | tail -n 1 | cut -f1)
    if echo "SHOW BINLOG EVENTS IN '$newest' LIMIT 10;" | binlog_sql | holds_transactions; then
        echo "FLUSH BINARY LOGS;" | binlog_sql || return 1
    fi
    shipped=$(cat "/state/shipped.$timeline" 2>/dev/null || echo $((first - 1)))
    closed=""
    for name in $(echo "SHOW BINARY LOGS;" | binlog_sql | cut -f1 | sed '$d'); do
        if [ "$(number "$name")" -gt "$shipped" ]; then closed="$closed $name"; fi
    done
    if [ -n "$closed" ]; then
        # The snapshot's time, and the hour it files under: each hour's last snapshot holds all of it,
        # which is what retention keeps (restic forget --keep-within-hourly).
        set -- $(date -u '+%F %T %Y%m%d%H')
        now="$1 $2" outbox="/state/outbox/$timeline/$3"
        mkdir -p "$outbox"
        MYSQL_PWD=$(cat "$DB_BINLOG_PASSWORD_FILE") "$(binlog_tool)" --read-from-remote-server --host=db_production \
            --user="$BINLOG_USER" --raw --result-file="$outbox/" $closed || return 1
        # An unreachable repository fails the round within a minute (said, then retried).
        open_repository no-init || return 1
        restic backup --quiet --host "$BACKUP_HOST" --tag kono --tag binlog \
            --tag "$TIMELINE_TAG$timeline" --time "$now" "$outbox" > /dev/null || return 1
        number "${closed##* }" > "/state/shipped.$timeline" || return 1
        echo "kono-backup: shipped$closed" >&2
        for old in /state/outbox/* /state/outbox/"$timeline"/*; do
            case "$old" in "/state/outbox/$timeline"|"$outbox") ;; *) rm -rf "$old" ;; esac
        done
        if [ "$(cat /state/forgotten 2>/dev/null)" != "$3" ]; then
            restic forget --quiet --host "$BACKUP_HOST" --tag binlog --group-by host,tags \
                --keep-within-hourly "${PITR_KEEP_HOURS}h" > /dev/null
            echo "$3" > /state/forgotten
        fi
    fi
    echo "$started" > /state/shipped-up-to
}

ship_round() {  # a round; a failure is said once in the log and the audit log, and so is the recovery
    if output=$(ship 2>&1); then
        [ -z "$output" ] || echo "$output" >&2
        if [ -e /state/failed.ship ]; then
            say "shipping binary logs works again"
            audit "ship recovered" "failing since $(cat /state/failed.ship)"
            rm -f /state/failed.ship
        fi
    else
        echo "$output" >&2
        if [ ! -e /state/failed.ship ]; then
            say "ship FAILED (retried every $((PITR_MAX_LAG_SECONDS / 2)) s)"
            audit "ship failed" "$(echo "$output" | tail -n 3)"
            date -u +%FT%TZ > /state/failed.ship
        fi
    fi
    ship_facts
}

ship_facts() {  # what the metrics service serves (monitoring = True; names: kono/monitoring.py): how far
    # shipping has come, as "name value" lines in /state/metrics; before any round shipped, since when
    # this service has waited to (a repository down from the start must not go unnoticed)
    up_to=$(cat /state/shipped-up-to 2>/dev/null || cat /state/loop-started)
    echo "kono_binlog_shipped_up_to_timestamp_seconds $(date -u -d "$up_to" +%s)" \
        > /state/metrics.$$ && mv /state/metrics.$$ /state/metrics
}

replay() {  # replay FILE POSITION UNTIL SNAPSHOT...: db_production's binary logs from FILE at POSITION
    from=$1 position=$2 until=$3
    shift 3
    rm -rf /state/replay /state/replay.sql /state/replay.list /state/replay.err
    mkdir -p /state/replay
    expected=$(number "$from")
    for snapshot in "$@"; do
        # Only the logs from the base's on: the base's hour also holds the logs written before it.
        restic ls --quiet --host "$BACKUP_HOST" "$snapshot" > /state/replay.list || return 1
        includes=""
        for path in $(grep '/binlog\.[0-9][0-9]*$' /state/replay.list); do
            [ "$(number "$path")" -lt "$expected" ] || includes="$includes --include $path"
        done
        [ -z "$includes" ] || restic restore --quiet --host "$BACKUP_HOST" --target /state/replay $includes \
            "$snapshot" || return 1
    done
    files=""
    for name in $(find /state/replay -type f -name 'binlog.[0-9]*' -exec basename {} \; | sort -u); do
        n=$(number "$name")
        [ "$n" -ge "$expected" ] || continue
        if [ "$n" -ne "$expected" ]; then
            echo "binary log number $expected is missing from the repository (the next is $name): nothing replayed" >&2
            return 4
        fi
        files="$files $(find /state/replay -type f -name "$name" | head -n 1)"
        last=$name expected=$((n + 1))
    done
    if [ -z "$files" ]; then
        echo "the repository holds no binary log from $from on: nothing replayed" >&2
        return 4
    fi
    # Only the production database's changes (not the old server's accounts); UTC, as UNTIL is.
    set -- --database="$DB_PRODUCTION_NAME" --start-position="$position"
    [ -z "$until" ] || set -- "$@" --stop-datetime="$until"
    TZ=UTC "$(binlog_tool)" "$@" $files > /state/replay.sql || return 1
    # A transaction's row events replay as one BINLOG statement (base64: a third bigger than its rows),
    # which max_allowed_packet refuses past 16 MB (MariaDB) or 64 MB (MySQL 8.4): both ends allow 1 GB,
    # the most either can, while the replay runs; the server's value is put back after.
    packet=$(echo "SELECT @@GLOBAL.max_allowed_packet;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE") \
        && echo "SET GLOBAL max_allowed_packet = $REPLAY_PACKET;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE" \
        || return 1
    replayed=0
    MYSQL_PWD=$(cat "$DB_PRODUCTION_PASSWORD_FILE") mysql -h db_production -uroot --binary-mode \
        --max-allowed-packet="$REPLAY_PACKET" < /state/replay.sql 2> /state/replay.err || replayed=$?
    echo "SET GLOBAL max_allowed_packet = $packet;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE"
    if [ "$replayed" != 0 ]; then  # the client's message, not the statement it prints before it
        { grep -m 3 '^ERROR' /state/replay.err || tail -n 3 /state/replay.err; } | cut -c1-300 >&2
        return 1
    fi
    rm -rf /state/replay /state/replay.sql /state/replay.list /state/replay.err
    echo "kono-backup: replayed binary logs $from (from $position) to $last${until:+, up to $until UTC}"
}

summary() {  # the value of a field in restic's --json summary line
    sed -n "s/.*\"message_type\":\"summary\".*\"$1\":\"\{0,1\}\([0-9a-f]*\)\"\{0,1\}[,}].*/\1/p" "$2"
}

open_repository() {  # open_repository [no-init]
    # One at a time in this container: the loop and a backup run by hand may start together, and two
    # `restic init` at once leave a repository neither can open. (A lock left by a killed run is
    # taken over after two minutes.)
    waited=0
    until mkdir /state/open.lock 2>/dev/null || [ "$waited" -ge 120 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    opened=0
    probe_or_init "$@" || opened=$?
    rmdir /state/open.lock 2>/dev/null || true
    return "$opened"
}

probe_or_init() {
    # restic retries an unreachable repository for 15 minutes (to ride out a network blip mid-backup);
    # at the start, a minute without an answer means it is down: fail now, loudly. Exit 10: there is
    # no repository there yet, so make it (with the operator's password). Only the backup service
    # makes it (the binlog service waits for it).
    rc=0
    timeout "$PROBE_SECONDS" restic cat config > /dev/null 2> /state/probe.err || rc=$?
    case "$rc" in
        0)  # A run killed mid-operation left its lock; an exclusive one (forget, prune, check, tag)
            # stops every backup until restic deems it stale, 30 minutes on. One of this service's
            # own (this hostname, templates/services/) whose process is gone is stale now: unlock
            # removes only such locks (and those 30 minutes old); a live run's lock stays.
            restic unlock >&2 || echo "kono-backup: restic unlock failed: a lock left behind stays up to 30 minutes" >&2 ;;
        10) if [ "${1:-}" = no-init ]; then
                echo "no repository at $RESTIC_REPOSITORY yet (the backup service makes it)" >&2
                return 1
            fi
            restic init ;;
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
    # `|| return 1` on each step: `run` calls this inside `if output=$(...)`, where bash (the official
    # image's sh) does not stop at a failure (dash, the double's, does): a failed step must fail the backup.
    open_repository || return 1
    timeline="" position=""
    if [ -n "${DB_BINLOG_PASSWORD_FILE:-}" ]; then  # point-in-time recovery: the dump is a base
        pitr_setup || return 1
        timeline=$(echo "SELECT id FROM kono_meta.timeline;" | sql db_production "$DB_PRODUCTION_PASSWORD_FILE") \
            && [ -n "$timeline" ] || return 1
        position=$(position_option)
    fi
    # Files of this run's own: the loop's backup and one run by hand (`docker exec ... backup`) may
    # overlap, and a shared summary file summed both runs' lines (seen: "bytes + 4961\n4961").
    ids="" bytes=0 added=0 out=/state/restic.$$.json
    trap 'rm -f "$out" /state/last-success.$$' EXIT
    for target in "db_production $DB_PRODUCTION_PASSWORD_FILE $DB_PRODUCTION_NAME" \
                  "db_dev $DB_DEV_PASSWORD_FILE $DB_DEV_NAME"; do
        set -- $target
        tags="--tag kono --tag $1" options=""
        if [ "$1" = db_production ] && [ -n "$timeline" ]; then
            if ! base_due "$timeline"; then
                say "db_production: its binary logs carry the base of $(date -u -d "@$(cut -d' ' -f1 /state/last-base)" +%F) forward"
                continue
            fi
            tags="$tags --tag $TIMELINE_TAG$timeline" options=$position
        fi
        restic backup --json --host "$BACKUP_HOST" $tags --stdin-filename "$1.sql" \
            --stdin-from-command -- sh -c 'MYSQL_PWD=$(cat "$1") exec mysqldump -h "$2" -uroot \
            --single-transaction --routines --triggers $4 --databases "$3"' dump "$2" "$1" "$3" "$options" > "$out" \
            || return 1
        tally
        if [ -n "$options" ]; then echo "$(date +%s) $timeline $RESTIC_REPOSITORY" > /state/last-base; fi
    done
    restic backup --json --host "$BACKUP_HOST" --tag kono --tag files $FILES > "$out" || return 1
    tally
    # Retention keeps the newest backup of a day (week, month); one an operator tagged "keep" stays.
    # (Binary logs have their own retention, in the binlog service.)
    restic forget --prune --host "$BACKUP_HOST" --tag db_production --tag db_dev --tag files --group-by host,tags \
        --keep-daily "$KEEP_DAILY" --keep-weekly "$KEEP_WEEKLY" --keep-monthly "$KEEP_MONTHLY" --keep-tag keep > /dev/null \
        || return 1
    echo "$started $bytes $added$ids" > /state/last-success.$$
    echo "$RESTIC_REPOSITORY" > /state/last-repository
    mv /state/last-success.$$ /state/last-success
    say "backup done: $bytes bytes read, $added bytes added to the repository, snapshots$ids"
}

check() {
    restic check --read-data-subset="$(( $(date -u +%u) ))/7"
}

restore() {
    replaying=""
    if [ $# -ge 5 ] && [ "$4" = replay ]; then
        prod=$1 dev=$2 files=$3 until=$5 replaying=yes
        shift 5
        binlogs="$*"  # snapshot ids: no spaces
    elif [ $# -eq 3 ]; then
        prod=$1 dev=$2 files=$3
    elif [ $# -eq 0 ]; then
        prod=latest dev=latest files=latest
    else
        echo "usage: kono-backup.sh restore [DB_PRODUCTION_SNAPSHOT DB_DEV_SNAPSHOT FILES_SNAPSHOT [replay UNTIL BINLOG_SNAPSHOT...]]" >&2
        return 2
    fi
    tables=$(echo "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$DB_PRODUCTION_NAME';" \
        | sql db_production "$DB_PRODUCTION_PASSWORD_FILE")
    if [ "$tables" != 0 ] && [ "${KONO_RESTORE_FORCE:-}" != yes ]; then
        say "refusing to restore: db_production already holds $tables tables in $DB_PRODUCTION_NAME (--force loads over them)"
        return 3
    fi
    # A restore is the disaster path: a lock the lost host's run left must not hold it for 30 minutes.
    open_repository no-init || return 1
    # The newest snapshots from before the restore (the caller names them) are pinned before anything
    # changes: the restored state's own backup would otherwise displace them as the day's newest.
    if [ -n "${KONO_RESTORE_KEEP:-}" ]; then
        restic tag --add keep $KONO_RESTORE_KEEP > /dev/null || return 1
        echo "kono-backup: pinned $KONO_RESTORE_KEEP"
    fi
    for target in "db_production $DB_PRODUCTION_PASSWORD_FILE $prod" "db_dev $DB_DEV_PASSWORD_FILE $dev"; do
        set -- $target
        # Through a file, not a pipe: a failed dump must fail the restore (sh has no pipefail).
        restic dump --host "$BACKUP_HOST" --tag "$1" "$3" "/$1.sql" > /state/restore.sql
        if [ "$1" = db_production ] && [ -n "$replaying" ]; then
            from=$(head -c 100000 /state/restore.sql | sed -n "s/^-- CHANGE .*LOG_FILE='\([^']*\)', *[A-Z_]*LOG_POS=\([0-9]*\).*/\1 \2/p" | head -n 1)
            if [ -z "$from" ]; then
                echo "the base $3 holds no binary log position: binary logs cannot carry it forward" >&2
                return 4
            fi
            # The binary logs replay onto the database exactly as the base left it: nothing newer may remain.
            echo "DROP DATABASE IF EXISTS \`$DB_PRODUCTION_NAME\`;" | sql "$1" "$2"
        fi
        sql "$1" "$2" < /state/restore.sql
        rm -f /state/restore.sql
        echo "kono-backup: restored $1"
    done
    includes=""
    for path in $RESTORED; do includes="$includes --include $path"; done
    restic restore --host "$BACKUP_HOST" --tag files "$files" --target / $includes
    echo "kono-backup: restored$(for path in $RESTORED; do printf ' %s' "${path#/backup/}"; done)"
    if [ -n "$replaying" ]; then
        replay $from "$until" $binlogs
    fi
    # The restored state gets a backup of its own (with pitr, a new base) right away, from the loop.
    rm -f /state/last-base
    touch /state/backup-now
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
        facts
    else
        echo "$output" >&2
        say "$1 FAILED"
        audit "$1 failed" "$(echo "$output" | tail -n 3)"
        date -u +%FT%TZ > "/state/failed.$1"
        facts
        return 1
    fi
}

facts() {  # what the metrics service serves (monitoring = True; names: kono/monitoring.py), as "name value"
    # lines in /state/metrics: the last success (as `last` says it) and whether the last backup failed
    success=$(last)
    {
        if [ -n "$success" ]; then
            set -- $success
            echo "kono_backup_last_success_timestamp_seconds $(date -u -d "$1" +%s)"
            echo "kono_backup_last_size_bytes $2"
        fi
        echo "kono_backup_failing $([ -e /state/failed.backup ] && echo 1 || echo 0)"
    } > /state/metrics.$$ && mv /state/metrics.$$ /state/metrics  # a run by hand may write at the same time
}

scheduled_at() {  # scheduled_at SCHEDULE NOW: the latest time at or before NOW that SCHEDULE ("03:00"
    # daily, "sun 04:30" weekly; UTC) names, as Unix time
    day=${1% *} time=${1##* }
    at=$(date -u -d "$(date -u -d "@$2" +%F) $time" +%s)
    [ "$at" -le "$2" ] || at=$((at - 86400))
    while [ "$day" != "$1" ] && [ "$(date -u -d "@$at" +%a | tr 'A-Z' 'a-z')" != "$day" ]; do at=$((at - 86400)); done
    echo "$at"
}

due() {  # due SCHEDULE NAME NOW: SCHEDULE's latest time has come since NAME last ran (/state/ran.NAME,
    # which the loop's first start writes), whether or not the service was up at that minute: one
    # missed while it was down runs when it is back, once
    ran=$(cat "/state/ran.$2" 2>/dev/null || echo "$3")
    case "$ran" in *-*) ran=$(date -u -d "$ran 23:59:59" +%s) ;; esac  # an older script's marker: the day it ran
    [ "$ran" -lt "$(scheduled_at "$1" "$3")" ]
}

case "${1:-}" in
    backup|check) run "$1" ;;
    last) last ;;
    restore) shift; restore "$@" ;;
    # A listing takes no lock (restic's --no-lock): it reads, and must not wait out a long prune's
    # exclusive lock (CI: a snapshots call failed after waiting 2 minutes behind retention's).
    snapshots) open_repository no-init && command restic --no-lock snapshots --json --host "$BACKUP_HOST" --tag kono ;;
    shipped) echo "$(cat /state/shipped-up-to 2>/dev/null || echo none) $(cat /state/failed.ship 2>/dev/null || echo -)" ;;
    ship-loop)
        mkdir -p /state
        echo $$ > /state/loop.pid
        [ -s /state/shipped-up-to ] || date -u +%FT%TZ > /state/loop-started
        ship_facts  # what the last run shipped, until this one's first round ends
        trap 'exit 0' TERM INT
        # First the database must be up, and the backup service must have made this account (it starts
        # beside this one); a minute or two on a new host. Then every failure is reported.
        tries=0
        until [ -n "$(echo "SELECT id FROM kono_meta.timeline;" | binlog_sql 2>/dev/null)" ] || [ "$tries" -ge 60 ]; do
            sleep 5
            tries=$((tries + 1))
        done
        while :; do
            ship_round
            sleep $((PITR_MAX_LAG_SECONDS / 2)) &
            wait $!
        done
        ;;
    keep) shift; restic tag --add keep "$@" ;;
    loop)
        mkdir -p /state
        echo $$ > /state/loop.pid
        # The service's first start counts as a run of each (a new host's first backup runs at once below).
        for name in backup check; do [ -e "/state/ran.$name" ] || date -u +%s > "/state/ran.$name"; done
        facts
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
        # With pitr, the repository and the shipper's account now (the shipper waits for them).
        if [ -n "${DB_BINLOG_PASSWORD_FILE:-}" ]; then run open_repository || true; run pitr_setup || true; fi
        ticks=0
        while :; do
            if { [ ! -s /state/last-success ] || [ -e /state/failed.backup ] || ! this_repository; } \
                    && [ $((ticks % 120)) = 0 ]; then
                run backup || true
            fi
            if [ -e /state/backup-now ]; then  # just restored
                rm -f /state/backup-now
                run backup || true
            fi
            ticks=$((ticks + 1))
            sleep 30 &
            wait $!
            now=$(date -u +%s)
            if due "$BACKUP_SCHEDULE" backup "$now"; then
                echo "$now" > /state/ran.backup
                run backup || true
            fi
            if due "$BACKUP_CHECK_SCHEDULE" check "$now"; then
                echo "$now" > /state/ran.check
                run check || true
            fi
        done
        ;;
    *) echo "usage: kono-backup.sh backup | check | restore [PROD DEV FILES [replay UNTIL BINLOG...]] | snapshots | keep SNAPSHOT... | last | loop | ship-loop | shipped" >&2; exit 2 ;;
esac
