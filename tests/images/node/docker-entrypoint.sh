#!/bin/sh
# TEST DOUBLE of nodejs/docker-node docker-entrypoint.sh: run `node` with the arguments when the
# first one is an option, is not a command, or is a non-executable file; else run them as given.
set -e

if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi

exec "$@"
