#!/bin/sh
# The api service's entrypoint (mounted read-only at /opt/kono). It starts as root holding only the
# capabilities below, prepares what the official image's user node (1000) needs, then becomes node
# for good: the change of user from root clears every capability, and no-new-privileges keeps it so.
#  - Compose secrets are the deploy user's 0600 files (DAC_OVERRIDE to read them): each *_FILE
#    variable pointing at one is pointed at a copy for node in a private tmpfs (CHOWN, FOWNER).
#  - node owns what the API writes: its log folder, and the api_build volume's top folder, where
#    start.js says each release's verdict (CHOWN; folders made root's by older versions included).
set -eu
install -d -o node -g node -m 0700 /run/api-secrets
for var in $(env | sed -n 's|^\([A-Z0-9_]*_FILE\)=/run/secrets/.*|\1|p'); do
    eval "secret=\$$var"
    copy=/run/api-secrets/$(basename "$secret")
    install -o node -g node -m 0400 "$secret" "$copy"
    export "$var=$copy"
done
chown node:node /var/log/api
find /var/log/api /srv/api -maxdepth 1 \( -name 'api.log*' -o -name '.kono-status*' \) ! -user node \
    -exec chown node:node {} +
chown node /srv/api
export HOME=/home/node
exec setpriv --reuid=node --regid=node --init-groups -- "$@"
