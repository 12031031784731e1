#!/usr/bin/env bash
# TEST DOUBLE of docker-library/mysql 8.4/docker-entrypoint.sh, for MariaDB. Same order and same
# rules as upstream for everything the stack relies on (tests/images/README.md):
# - *_FILE variables are read as root, before the step-down; both VAR and VAR_FILE set is an error;
# - it then re-executes itself as the mysql user (gosu, uid 999), so init scripts run as mysql;
# - only on first start (no mysql/ in the data dir): root@localhost and root@$MYSQL_ROOT_HOST
#   (default %), MYSQL_DATABASE, MYSQL_USER with ALL on it, then /docker-entrypoint-initdb.d/:
#   *.sh run when executable, sourced otherwise (with docker_process_sql, mysql_note, ... defined),
#   *.sql fed to docker_process_sql; anything else ignored with a warning;
# - the temporary server listens on the socket only (--skip-networking).
set -eo pipefail
shopt -s nullglob

mysql_log() { local type="$1"; shift; printf '%s [%s] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$type" "$*"; }
mysql_note() { mysql_log Note "$@"; }
mysql_warn() { mysql_log Warn "$@" >&2; }
mysql_error() { mysql_log ERROR "$@" >&2; exit 1; }

file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		mysql_error "Both $var and $fileVar are set (but are exclusive)"
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

SOCKET=/var/run/mysqld/mysqld.sock
DATADIR=/var/lib/mysql

_mysql_passfile() {
	# Upstream's passfile names no user when it gives no password, and its init works as root.
	# MariaDB's client would log in as the OS user (mysql) instead, so name root explicitly.
	printf '[client]\nuser=root\n'
	if [ '--dont-use-mysql-root-password' = "$1" ] || [ -z "$MYSQL_ROOT_PASSWORD" ]; then return; fi
	printf 'password="%s"\n' "$MYSQL_ROOT_PASSWORD"
}

docker_process_sql() {
	passfileArgs=()
	if [ '--dont-use-mysql-root-password' = "$1" ]; then passfileArgs+=( "$1" ); shift; fi
	if [ -n "$MYSQL_DATABASE" ]; then set -- --database="$MYSQL_DATABASE" "$@"; fi
	mysql --defaults-extra-file=<( _mysql_passfile "${passfileArgs[@]}") --protocol=socket -hlocalhost \
		--socket="${SOCKET}" --comments "$@"
}

docker_process_init_files() {
	mysql=( docker_process_sql )
	local f
	for f; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then mysql_note "$0: running $f"; "$f"
				else mysql_note "$0: sourcing $f"; . "$f"; fi ;;
			*.sql) mysql_note "$0: running $f"; docker_process_sql < "$f" ;;
			*) mysql_warn "$0: ignoring $f" ;;
		esac
	done
}

docker_setup_env() {
	file_env 'MYSQL_ROOT_HOST' '%'
	file_env 'MYSQL_DATABASE'
	file_env 'MYSQL_USER'
	file_env 'MYSQL_PASSWORD'
	file_env 'MYSQL_ROOT_PASSWORD'
	DATABASE_ALREADY_EXISTS=
	if [ -d "$DATADIR/mysql" ]; then DATABASE_ALREADY_EXISTS='true'; fi
}

docker_setup_db() {
	local rootCreate=
	if [ -n "$MYSQL_ROOT_HOST" ] && [ "$MYSQL_ROOT_HOST" != 'localhost' ]; then
		rootCreate="CREATE USER 'root'@'${MYSQL_ROOT_HOST}' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}' ;
			GRANT ALL ON *.* TO 'root'@'${MYSQL_ROOT_HOST}' WITH GRANT OPTION ;"
	fi
	# MySQL's --initialize-insecure makes root@localhost only; mariadb-install-db adds root@<hostname>.
	docker_process_sql --dont-use-mysql-root-password --database=mysql <<-EOSQL
		SET autocommit = 1;
		SET @@SESSION.SQL_LOG_BIN=0;
		DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
		FLUSH PRIVILEGES ;
		ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}' ;
		GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION ;
		FLUSH PRIVILEGES ;
		${rootCreate}
		DROP DATABASE IF EXISTS test ;
	EOSQL
	if [ -n "$MYSQL_DATABASE" ]; then
		mysql_note "Creating database ${MYSQL_DATABASE}"
		docker_process_sql --database=mysql <<<"CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` ;"
	fi
	if [ -n "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
		mysql_note "Creating user ${MYSQL_USER}"
		docker_process_sql --database=mysql <<<"CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD' ;"
		if [ -n "$MYSQL_DATABASE" ]; then
			docker_process_sql --database=mysql <<<"GRANT ALL ON \`${MYSQL_DATABASE//_/\\_}\`.* TO '$MYSQL_USER'@'%' ;"
		fi
	fi
}

_main() {
	if [ "${1:0:1}" = '-' ]; then set -- mysqld "$@"; fi
	if [ "$1" = 'mysqld' ]; then
		mysql_note "Entrypoint script for the MySQL test double (MariaDB) started."
		docker_setup_env
		mkdir -p "$DATADIR" "$(dirname "$SOCKET")"
		if [ "$(id -u)" = "0" ]; then
			find "$DATADIR" "$(dirname "$SOCKET")" \! -user mysql -exec chown --no-dereference mysql '{}' +
			mysql_note "Switching to dedicated user 'mysql'"
			exec gosu mysql "$BASH_SOURCE" "$@"
		fi
		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			if [ -z "$MYSQL_ROOT_PASSWORD" ]; then
				mysql_error "Database is uninitialized and password option is not specified"
			fi
			ls /docker-entrypoint-initdb.d/ > /dev/null
			mysql_note "Initializing database files"
			mariadb-install-db --datadir="$DATADIR" --skip-test-db --auth-root-authentication-method=normal >/dev/null
			mysql_note "Starting temporary server"
			# As upstream's docker_temp_server_start "$@": the temporary server gets the command's options
			# (the stack's binary log settings among them), so the first start's statements are logged too.
			mariadbd "${@:2}" --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
			for _ in $(seq 60); do mariadb-admin --socket="$SOCKET" -uroot ping --silent 2>/dev/null && break; sleep 1; done
			docker_setup_db
			docker_process_init_files /docker-entrypoint-initdb.d/*
			mysql_note "Stopping temporary server"
			mysqladmin --defaults-extra-file=<( _mysql_passfile ) shutdown --socket="$SOCKET"
			wait
			mysql_note "MySQL init process done. Ready for start up."
		fi
		shift
		set -- mariadbd "$@"
	fi
	exec "$@"
}

_main "$@"
