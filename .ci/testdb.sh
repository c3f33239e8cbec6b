#!/usr/bin/env bash
# Runs a command with a throwaway Postgres cluster, then removes the cluster,
# whatever the command's outcome:
#
#   .ci/testdb.sh go test ./...
#
# The command gets the cluster's URL in STRANGLER_TEST_DATABASE_URL. On a
# fresh Debian machine, as root, it installs the postgresql package first
# when initdb and pg_ctl are missing. Postgres refuses to run as root, so as
# root the cluster runs as the postgres user (created by the package).
set -euo pipefail
# runuser and useradd live in sbin, which a non-login root shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"
source "$(dirname "$0")/apt.sh"

find_pg_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  # Debian keeps them out of PATH, per major version; take the newest.
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
    echo "$dir"
    return 0
  fi
  return 1
}

if ! pg_bin=$(find_pg_bin); then
  apt_install testdb postgresql
  pg_bin=$(find_pg_bin) || { echo "testdb: initdb still missing after installing postgresql" >&2; exit 1; }
fi

run_as=()
if [[ $(id -u) -eq 0 ]]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  run_as=(runuser -u postgres --)
fi

# In memory when the machine has a tmpfs: tests create and drop a schema
# each, and on a disk the file operations of that DDL dominate their time.
base=${TMPDIR:-/tmp}
if [[ -d /dev/shm && -w /dev/shm ]]; then base=/dev/shm; fi
dir=$(mktemp -d "$base/strangler-pg.XXXXXX")
chmod 755 "$dir"
if [[ ${#run_as[@]} -gt 0 ]]; then chown postgres "$dir"; fi

cleanup() {
  "${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${run_as[@]}" "$pg_bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync \
  --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
mkdir -p "$dir/sock"
if [[ ${#run_as[@]} -gt 0 ]]; then chown postgres "$dir/sock"; fi

# A free port: probe, start, and draw again if another process took it in
# between. Durability is traded for speed: the cluster dies with the run.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
started=
for _ in 1 2 3 4 5 6 7 8 9 10; do
  port=$((20000 + RANDOM % 30000))
  port_free "$port" || continue
  if "${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
      -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB" \
      >/dev/null; then
    started=1
    break
  fi
done
if [[ -z "$started" ]]; then
  echo "testdb: postgres did not start" >&2
  cat "$dir/postgres.log" >&2 || true
  exit 1
fi

export STRANGLER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
echo "testdb: postgres $("$pg_bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2
set +e
"$@"
rc=$?
set -e
exit "$rc"
