#!/bin/sh
# Prepares sshd, then runs it in the foreground.
set -eu
# Host keys live in the container, made on its first start.
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec "$@"
