#!/usr/bin/env bash
# pg_ctl for pytest-postgresql. PostgreSQL refuses to run as root, and CI containers run as root:
# there, hand the data folder and log file to the "postgres" user and run pg_ctl as that user.
set -euo pipefail
real="${THRNN_REAL_PG_CTL:-$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)}"
# setsid: the server gets its own session, so signals sent to the test run's process group (by the
# code under test, e.g. when a task ends) never reach it
if [ "$(id -u)" != "0" ]; then exec setsid -w "$real" "$@"; fi
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -D|-l|--pgdata|--log)
      path="${args[$((i + 1))]}"
      dir="$path"; case "${args[$i]}" in -l|--log) true ;; *) false ;; esac && dir="$(dirname "$path")"
      mkdir -p "$dir"
      chown -R postgres "$dir"
      # let the postgres user reach the folder through pytest's private (0700) temp folders
      p="$dir"; while [ "$p" != "/" ]; do p="$(dirname "$p")"; chmod o+x "$p" 2>/dev/null || true; done
      ;;
  esac
done
exec setsid -w runuser -u postgres -- "$real" "$@"
