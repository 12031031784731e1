#!/bin/bash
# TEST DOUBLE of the official mysql image's entrypoint, for MariaDB. Honours the variables kono uses.
set -euo pipefail

file_env() {  # VAR: take VAR, or the content of the file named by VAR_FILE
  local var="$1" file_var="${1}_FILE"
  if [ -n "${!file_var:-}" ]; then
    export "$var"="$(< "${!file_var}")"
  fi
}

if [ "${1:-}" = "mysqld" ]; then
  for v in MYSQL_ROOT_PASSWORD MYSQL_PASSWORD; do file_env "$v"; done
  if [ ! -d /var/lib/mysql/mysql ]; then
    : "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD or MYSQL_ROOT_PASSWORD_FILE is required}"
    echo "[Entrypoint] initialising database files"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock &
    pid=$!
    for _ in $(seq 60); do mariadb-admin --socket=/run/mysqld/mysqld.sock ping --silent && break; sleep 1; done
    sql() { mariadb --protocol=socket --socket=/run/mysqld/mysqld.sock -uroot "$@"; }
    sql <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD//\'/\'\'}';
CREATE USER 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD//\'/\'\'}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    export MYSQL_PWD="$MYSQL_ROOT_PASSWORD"
    if [ -n "${MYSQL_DATABASE:-}" ]; then
      sql -e "CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`"
    fi
    if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
      sql -e "CREATE USER '${MYSQL_USER}'@'%' IDENTIFIED BY '${MYSQL_PASSWORD//\'/\'\'}'"
      [ -z "${MYSQL_DATABASE:-}" ] || sql -e "GRANT ALL ON \`${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%'"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sh) echo "[Entrypoint] running $f"; . "$f" ;;
        *.sql) echo "[Entrypoint] running $f"; sql ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} < "$f" ;;
      esac
    done
    unset MYSQL_PWD
    mariadb-admin --socket=/run/mysqld/mysqld.sock -uroot --password="$MYSQL_ROOT_PASSWORD" shutdown
    wait "$pid" || true
    echo "[Entrypoint] initialisation done"
  fi
  shift
  exec mariadbd --user=mysql "$@"
fi
exec "$@"
