#!/bin/sh
# TEST DOUBLE of nginxinc/docker-nginx entrypoint/10-listen-on-ipv6-by-default.sh: adds an IPv6
# listen to /etc/nginx/conf.d/default.conf only when IPv6 exists and the file is writable and still
# the packaged one (upstream compares the dpkg checksum; here, the copy saved at build time).
set -e
ME=$(basename "$0")
DEFAULT_CONF_FILE="etc/nginx/conf.d/default.conf"
[ -f "/proc/net/if_inet6" ] || { echo "$ME: error: ipv6 not available"; exit 0; }
[ -f "/$DEFAULT_CONF_FILE" ] || { echo "$ME: error: /$DEFAULT_CONF_FILE is not a file or does not exist"; exit 0; }
touch /$DEFAULT_CONF_FILE 2>/dev/null || { echo "$ME: error: can not modify /$DEFAULT_CONF_FILE (read-only file system?)"; exit 0; }
grep -q "listen  \[::]\:80;" /$DEFAULT_CONF_FILE && { echo "$ME: info: IPv6 listen already enabled"; exit 0; }
cmp -s /usr/share/nginx/default.conf.packaged /$DEFAULT_CONF_FILE || {
    echo "$ME: info: /$DEFAULT_CONF_FILE differs from the packaged version"; exit 0; }
sed -i -E 's,listen       80;,listen       80;\n    listen  [::]:80;,' /$DEFAULT_CONF_FILE
echo "$ME: Enabled listen on IPv6 in /$DEFAULT_CONF_FILE"
exit 0
