#!/bin/sh
# Debian packages the test suite uses: a PostgreSQL server (the MLflow and Optuna backends
# of the distributed tests) and an OpenSSH server (the SSH remote of the DVC remote test).
# Installed with apt-get when they are missing and this runs as root; otherwise it says what
# is missing, and the tests that need it are skipped with that reason.
set -eu
missing=""
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$missing postgresql"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
else
    echo "note: Debian packages$missing are missing and cannot be installed here (needs root and apt-get);" \
         "the tests that need them will be skipped"
fi
