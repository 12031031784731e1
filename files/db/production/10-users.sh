# Sourced (it is not executable) by the mysql image's entrypoint, on first start only (empty data
# directory), as the mysql user, after it has created MYSQL_DATABASE and the read-write MYSQL_USER
# (api). Adds the read-only user. docker_process_sql is the entrypoint's own helper: root, over the
# socket, in MYSQL_DATABASE. The password goes by stdin, never on a command line.
unauthorized_password=$(cat "$UNAUTHORIZED_API_PASSWORD_FILE")
# Not binary-logged: the statement holds the password (MariaDB logs it as written).
docker_process_sql <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER 'unauthorized_api'@'%' IDENTIFIED BY '${unauthorized_password}';
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO 'unauthorized_api'@'%';
SQL
unset unauthorized_password
