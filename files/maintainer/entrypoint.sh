#!/bin/sh
# Creates the maintainer users (sudo group, SSH keys from /etc/kono/keys/<login>), applies their
# password hashes with chpasswd -e, then runs sshd in the foreground.
set -eu

mkdir -p /var/lib/kono-ssh/etc/ssh /run/sshd /etc/kono
ssh-keygen -A -f /var/lib/kono-ssh >/dev/null

for login in $MAINTAINER_USERS; do
  id -u "$login" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo "$login"
  install -d -m 0700 -o "$login" -g "$login" "/home/$login/.ssh"
  if [ -f "/etc/kono/keys/$login" ]; then
    install -m 0600 -o "$login" -g "$login" "/etc/kono/keys/$login" "/home/$login/.ssh/authorized_keys"
  else
    rm -f "/home/$login/.ssh/authorized_keys"
  fi
done
echo "AllowUsers $MAINTAINER_USERS" > /etc/kono/sshd_allow.conf

# SSHD_POLICY: "Key value" lines; each algorithm list is cut to what this OpenSSH supports (the
# image's may be older or newer than the host's).
supported=$(mktemp)
echo "$SSHD_POLICY" | while read -r key value; do
  case "$key" in
    KexAlgorithms) query=kex ;;
    Ciphers) query=cipher ;;
    MACs) query=mac ;;
    HostKeyAlgorithms) query=HostKeyAlgorithms ;;
    *) echo "$key $value"; continue ;;
  esac
  ssh -Q "$query" > "$supported"
  echo "$key $(echo "$value" | tr ',' '\n' | grep -Fx -f "$supported" | paste -sd, -)"
done > /etc/kono/sshd_policy.conf
rm -f "$supported"

# Hashes only, by file: no password or hash on any command line.
chpasswd -e < "$MAINTAINER_PASSWORD_HASHES_FILE"

# Shared code and asset volumes: writable by the sudo group, so kono-deploy needs no sudo.
for dir in /srv/api /srv/app /srv/static /srv/src; do
  mkdir -p "$dir" && chgrp sudo "$dir" && chmod 2775 "$dir"
done

# What kono-deploy needs, for SSH sessions (which do not inherit this environment).
cat > /etc/kono/deploy.env <<ENV
API_REPO='$API_REPO'
API_BRANCH='$API_BRANCH'
APP_REPO='$APP_REPO'
APP_BRANCH='$APP_BRANCH'
RELEASES_KEPT='$RELEASES_KEPT'
API_STATUS_PORT='$API_STATUS_PORT'
ENV
exec "$@"
