# shellcheck shell=bash
# A throwaway PostgreSQL for the tests. Source this file, then call pg_throwaway_start:
#
#   source scripts/pg-throwaway.sh
#   pg_throwaway_start
#
# It initialises a cluster in a temp folder, starts it on a free loopback port (as the
# postgres user when run as root: initdb refuses root), exports SANDBOXD_TEST_PG_DSN for
# internal/testing/pgtest, and installs an EXIT trap that stops the cluster and removes its folder.
# PG_BIN overrides where initdb and pg_ctl are found (default: newest /usr/lib/postgresql/*/bin).

pg_throwaway_start() {
  local bin dir port attempt
  bin="${PG_BIN:-}"
  if [ -z "$bin" ]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "pg-throwaway: no initdb/pg_ctl (set PG_BIN or install postgresql)" >&2
    return 1
  fi

  dir="$(mktemp -d "${TMPDIR:-/tmp}/sandboxd-pg-XXXXXX")"
  PG_THROWAWAY_DIR="$dir"
  PG_THROWAWAY_BIN="$bin"
  trap pg_throwaway_stop EXIT

  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
  fi
  _pg_throwaway_as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync --no-instructions >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    return 1
  }

  # A port free now may be taken before the server binds it: try a few.
  for attempt in 1 2 3 4 5; do
    port="$(_pg_throwaway_free_port)"
    if _pg_throwaway_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null; then
      export SANDBOXD_TEST_PG_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
      echo "pg-throwaway: PostgreSQL on 127.0.0.1:$port ($dir)"
      return 0
    fi
    echo "pg-throwaway: start on port $port failed (attempt $attempt)" >&2
  done
  cat "$dir/log" >&2
  return 1
}

# pg_throwaway_stop stops the cluster and removes its folder; the EXIT trap calls it.
pg_throwaway_stop() {
  local dir="${PG_THROWAWAY_DIR:-}"
  [ -n "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    _pg_throwaway_as_owner "$PG_THROWAWAY_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  PG_THROWAWAY_DIR=""
}

_pg_throwaway_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null; then
      runuser -u postgres -- "$@"
    else
      setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

# _pg_throwaway_free_port prints a loopback TCP port nobody listens on.
_pg_throwaway_free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}
