# Sourced by the mysql image's entrypoint on first start only (empty data directory), after it has
# created MYSQL_DATABASE and the read-write MYSQL_USER (api). Adds the read-only user.
unauthorized_password=$(cat "$UNAUTHORIZED_API_PASSWORD_FILE")
MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysql --protocol=socket -uroot <<SQL
CREATE USER 'unauthorized_api'@'%' IDENTIFIED BY '${unauthorized_password}';
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO 'unauthorized_api'@'%';
FLUSH PRIVILEGES;
SQL
unset unauthorized_password
