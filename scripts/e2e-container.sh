#!/usr/bin/env bash
# End-to-end container test without a Docker engine: the kernel primitives a runtime uses.
#
# 1. Builds the static binary and the static example app (scripts/build-static.sh).
# 2. Makes a root filesystem holding only /preflight, /demo-app and /migrations (plus the empty
#    mount points a runtime fills: /etc/hosts, /etc/resolv.conf, /proc, /tmp, /data).
# 3. PostgreSQL: a network namespace of its own, listening only on fdaa:0:1::3, joined to the
#    container's namespace by a veth pair. The container's namespace has no IPv4 address at
#    all, and `db.internal` is in its hosts file with an IPv6 address only (fly.io's 6PN).
# 4. Runs the image like a runtime: new mount and PID namespaces, /proc, the hosts and
#    resolv.conf files bind-mounted, a tmpfs /tmp, the root remounted read-only, chroot, uid and
#    gid 65532, an empty environment but for the image's variables; preflight is PID 1.
# 5. Scenarios (each one's "container start → app listening" time is printed):
#    - postgres-late: the database starts 3 s after the container; the app must start after
#      both migrations are applied;
#    - postgres-up: a second container with the database up and the schema current;
#    - sqlite: a volume at /data, migrating at boot with backups on, then a new image version
#      with one more migration (a backup must be written before it is applied).
#    Each is stopped like `docker stop`: SIGTERM, SIGKILL if still running 10 s later. It must
#    exit 0 well before that, with no process left behind.
#
# Run as root. Usage: scripts/e2e-container.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

say() { echo "e2e: $*" >&2; }
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "run as root: it builds namespaces and mounts"

TARGET="$(uname -m)-unknown-linux-musl"
scripts/build-static.sh --example demo-app
BIN="$REPO/target/$TARGET/release/preflight"
APP="$REPO/target/$TARGET/release/examples/demo-app"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
ID=$$
DBNS="pf-e2e-db-$ID"
APPNS="pf-e2e-app-$ID"
WORK=$(mktemp -d /tmp/pf-e2e.XXXXXX)
chmod 755 "$WORK"
PASSWORD="e2e-Secret-$RANDOM$RANDOM"
UID_APP=65532

cleanup() {
    set +e
    [[ -n "${CONTAINER:-}" ]] && kill -KILL "$CONTAINER" 2>/dev/null
    [[ -f "$WORK/pg/postmaster.pid" ]] &&
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1
    ip netns del "$APPNS" 2>/dev/null
    ip netns del "$DBNS" 2>/dev/null
    rm -rf "/etc/netns/$APPNS"
    if [[ -n "${PF_E2E_KEEP:-}" ]]; then echo "e2e: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- the image -----------------------------------------------------------------------------
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"/{etc,proc,tmp,data,migrations}
install -m 0755 "$BIN" "$ROOTFS/preflight"
install -m 0755 "$APP" "$ROOTFS/demo-app"
install -m 0644 examples/migrations/*.sql "$ROOTFS/migrations/"
touch "$ROOTFS/etc/hosts" "$ROOTFS/etc/resolv.conf"
chmod 1777 "$ROOTFS/tmp"
say "image: $(find "$ROOTFS" -type f | sed "s|$ROOTFS||" | sort | tr '\n' ' ')"
say "static binary: $(stat -c %s "$BIN") bytes"

# --- the network: IPv6 only, AAAA-only name -----------------------------------------------
ip netns add "$DBNS"
ip netns add "$APPNS"
ip link add "pfe2e$ID" type veth peer name "pfe2e${ID}b"
ip link set "pfe2e$ID" netns "$APPNS"
ip link set "pfe2e${ID}b" netns "$DBNS"
ip -n "$DBNS" link set lo up
ip -n "$DBNS" link set "pfe2e${ID}b" up
ip -n "$DBNS" addr add fdaa:0:1::3/64 dev "pfe2e${ID}b" nodad
ip -n "$APPNS" link set lo up
ip -n "$APPNS" addr del 127.0.0.1/8 dev lo
ip -n "$APPNS" link set "pfe2e$ID" up
ip -n "$APPNS" addr add fdaa:0:1::2/64 dev "pfe2e$ID" nodad
[[ -z $(ip -n "$APPNS" -4 addr show) ]] || fail "the app namespace still has an IPv4 address"
mkdir -p "/etc/netns/$APPNS"
printf '::1 localhost\nfdaa:0:1::3 db.internal\n' >"/etc/netns/$APPNS/hosts"
# Nothing answers there: the name must come from the hosts file, as musl's resolver reads it.
printf 'nameserver fdaa:0:1::53\noptions timeout:1 attempts:1\n' >"/etc/netns/$APPNS/resolv.conf"

# --- PostgreSQL ----------------------------------------------------------------------------
printf '%s\n' "$PASSWORD" >"$WORK/pwfile"
chown postgres "$WORK/pwfile"
mkdir -p "$WORK/pgsock" "$WORK/pg" && chown postgres "$WORK/pgsock" "$WORK/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -U postgres --pwfile="$WORK/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
echo "host all all fdaa:0:1::/64 scram-sha-256" >>"$WORK/pg/pg_hba.conf"
pg_start() {
    ip netns exec "$DBNS" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w \
        -o "-c listen_addresses=fdaa:0:1::3 -p 5432 -k $WORK/pgsock -c fsync=off" start >/dev/null
}
psql_q() { runuser -u postgres -- "$PGBIN/psql" -h "$WORK/pgsock" -p 5432 -d postgres -tAqc "$1"; }

# --- the runtime ---------------------------------------------------------------------------
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# start_container NAME VOLUME ENV… -- ARGS…: like `docker run -d`; sets CONTAINER (host pid
# of its PID 1) and START_MS. stdout and stderr go to $WORK/NAME.out and $WORK/NAME.err.
start_container() {
    local name=$1 volume=$2
    shift 2
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    START_MS=$(now_ms)
    ip netns exec "$APPNS" unshare --mount --pid --fork --propagation private /bin/sh -ec '
        r=$1; volume=$2; shift 2
        mount --bind "$r" "$r"
        mount -t proc proc "$r/proc"
        mount -t tmpfs -o mode=1777,size=16m,nosuid,nodev tmpfs "$r/tmp"
        mount --bind /etc/hosts "$r/etc/hosts"
        mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
        [ -z "$volume" ] || mount --bind "$volume" "$r/data"
        mount -o remount,bind,ro "$r"
        exec /usr/bin/env -i "$@"
    ' sh "$ROOTFS" "$volume" PATH=/ HOME=/tmp PREFLIGHT_MIGRATIONS=/migrations "${envs[@]}" \
        /usr/sbin/chroot --userspec="$UID_APP:$UID_APP" "$ROOTFS" /preflight "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    WRAPPER=$!
    local deadline=$(($(now_ms) + 5000))
    CONTAINER=""
    while [[ -z $CONTAINER ]]; do
        CONTAINER=$(pgrep -P "$WRAPPER" || true)
        (($(now_ms) < deadline)) || fail "$name: the container's PID 1 did not appear"
        [[ -n $CONTAINER ]] || sleep 0.01
    done
}

# wait_for_line FILE PATTERN SECONDS: the event, bounded.
wait_for_line() {
    local deadline=$(($(now_ms) + $3 * 1000))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        if (($(now_ms) > deadline)) || ! kill -0 "$WRAPPER" 2>/dev/null; then
            grep -q -- "$2" "$1" 2>/dev/null && return 0
            echo "--- $1:" >&2; cat "$1" >&2
            echo "--- ${1%.*}.err:" >&2; cat "${1%.*}.err" >&2
            fail "'$2' did not appear in $1 within $3 s"
        fi
        sleep 0.01
    done
}

# stop_container NAME: like `docker stop`: SIGTERM to PID 1, SIGKILL 10 s later; expects exit 0
# without the SIGKILL and nothing left running.
stop_container() {
    local name=$1 t0 status=0
    t0=$(now_ms)
    kill -TERM "$CONTAINER"
    local deadline=$((t0 + 10000))
    while kill -0 "$WRAPPER" 2>/dev/null && (($(now_ms) < deadline)); do sleep 0.01; done
    if kill -0 "$WRAPPER" 2>/dev/null; then
        kill -KILL "$CONTAINER"
        fail "$name: still running 10 s after SIGTERM; needed SIGKILL"
    fi
    wait "$WRAPPER" || status=$?
    ((status == 0)) || { cat "$WORK/$name.err" >&2; fail "$name: exit status $status after SIGTERM, expected 0"; }
    if pgrep -u "$UID_APP" >/dev/null; then
        fail "$name: processes of uid $UID_APP left behind: $(pgrep -a -u "$UID_APP")"
    fi
    say "$name: stopped by SIGTERM in $(($(now_ms) - t0)) ms, exit 0, no process left"
    CONTAINER=""
}

# check_logs NAME: every stderr line is JSON, the password is nowhere, preflight was PID 1,
# the app ran as the unprivileged user, and it started after the schema was current.
check_logs() {
    local name=$1
    python3 - "$WORK/$name.err" "$WORK/$name.out" "$PASSWORD" "$UID_APP" <<'EOF'
import json, sys
err, out, password, uid = sys.argv[1:]
lines = open(err).read().splitlines()
events = []
for line in lines:
    try:
        events.append(json.loads(line))
    except ValueError:
        sys.exit(f"not a JSON log line: {line!r}")
text = open(err).read() + open(out).read()
if password in text:
    sys.exit("the database password appears in the container's output")
messages = [e.get("message") for e in events]
start = messages.index("starting") if "starting" in messages else sys.exit(f"no 'starting' line: {messages}")
if events[start].get("pid") != 1:
    sys.exit(f"preflight was not PID 1: {events[start]}")
schema = [i for i, m in enumerate(messages) if m in ("migrations done", "schema is current")]
if not schema or schema[0] > start:
    sys.exit(f"the app started before the schema was reported current: {messages}")
if f"as uid {uid}" not in open(out).read():
    sys.exit(f"the app did not run as uid {uid}: {open(out).read()!r}")
EOF
}

ro_root() { awk '$5 == "/" { print $6 }' "/proc/$CONTAINER/mountinfo" | grep -q '^ro'; }

# --- scenario 1: PostgreSQL comes up late --------------------------------------------------
DB_URL="DATABASE_URL=postgres://postgres:$PASSWORD@db.internal:5432/postgres"
start_container postgres-late "" "$DB_URL" -- run --log-format json --timeout 60s -- /demo-app
(sleep 3 && pg_start) &
PG_STARTER=$!
wait_for_line "$WORK/postgres-late.out" "demo-app: listening" 60
LATE_MS=$(($(now_ms) - START_MS))
wait "$PG_STARTER" || fail "PostgreSQL did not start"
ro_root || fail "postgres-late: the container's root is not read-only"
[[ $(psql_q "SELECT count(*) FROM _sqlx_migrations WHERE success") == 2 ]] ||
    fail "postgres-late: the app runs but the migrations are not both applied"
psql_q "SELECT author FROM notes LIMIT 0" >/dev/null || fail "postgres-late: the notes table lacks its column"
grep -q '"address":"\[fdaa:0:1::3\]:5432"' "$WORK/postgres-late.err" ||
    fail "postgres-late: not connected over IPv6 to fdaa:0:1::3: $(cat "$WORK/postgres-late.err")"
stop_container postgres-late
check_logs postgres-late || fail "postgres-late: logs"
grep -q '"message":"exited".*"exit_code":0' "$WORK/postgres-late.err" || fail "postgres-late: no exited line"
say "postgres-late: container start → app listening in $LATE_MS ms (database started 3 s late)"

# --- scenario 2: PostgreSQL already up, schema current -------------------------------------
start_container postgres-up "" "$DB_URL" -- run --log-format json --timeout 60s -- /demo-app
wait_for_line "$WORK/postgres-up.out" "demo-app: listening" 30
UP_MS=$(($(now_ms) - START_MS))
# PID 1 is now the supervise-only process (the re-exec reset its peak). tini keeps ~1.3 MB; the
# laid-out static build ~0.7 MB. Over 1 MB means the layout no longer fits the code.
HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$CONTAINER/status")
((HWM_KB <= 1024)) || fail "postgres-up: the supervisor's peak RSS is $HWM_KB kB, over 1024 kB: \
regenerate scripts/supervisor-layout.ld with scripts/profile-supervisor.py"
stop_container postgres-up
check_logs postgres-up || fail "postgres-up: logs"
say "postgres-up: container start → app listening in $UP_MS ms (database up, schema current)"
say "postgres-up: supervisor peak RSS $HWM_KB kB"

# --- scenario 3: SQLite on a volume, migrating at boot with backups ------------------------
mkdir -p "$WORK/volume" && chown "$UID_APP:$UID_APP" "$WORK/volume"
SQLITE_ENV=(DATABASE_URL=sqlite:/data/app.db PREFLIGHT_BACKUP=true)
start_container sqlite "$WORK/volume" "${SQLITE_ENV[@]}" -- run --log-format json -- /demo-app
wait_for_line "$WORK/sqlite.out" "demo-app: listening" 30
SQLITE_MS=$(($(now_ms) - START_MS))
stop_container sqlite
check_logs sqlite || fail "sqlite: logs"

# The next image version brings one more migration: a backup must precede it.
printf 'CREATE INDEX notes_by_author ON notes (author);\n' >"$ROOTFS/migrations/20260103000000_index_notes.sql"
start_container sqlite-v2 "$WORK/volume" "${SQLITE_ENV[@]}" -- run --log-format json -- /demo-app
wait_for_line "$WORK/sqlite-v2.out" "demo-app: listening" 30
stop_container sqlite-v2
check_logs sqlite-v2 || fail "sqlite-v2: logs"
python3 - "$WORK/volume" <<'EOF' || fail "sqlite: the volume is not as expected"
import glob, os, sqlite3, sys
volume = sys.argv[1]
db = sqlite3.connect(os.path.join(volume, "app.db"))
applied = db.execute("SELECT count(*) FROM _sqlx_migrations WHERE success").fetchone()[0]
assert applied == 3, f"{applied} migrations applied, expected 3"
assert db.execute("SELECT name FROM sqlite_master WHERE name = 'notes_by_author'").fetchone(), "no index"
backups = [p for p in glob.glob(os.path.join(volume, "*")) if p.endswith(".db") and "app.db" != os.path.basename(p)]
assert backups, f"no backup beside the database: {os.listdir(volume)}"
old = sqlite3.connect(sorted(backups)[-1])
n = old.execute("SELECT count(*) FROM _sqlx_migrations").fetchone()[0]
assert n == 2, f"the newest backup holds {n} migrations, expected the 2 from before the upgrade"
EOF
say "sqlite: container start → app listening in $SQLITE_MS ms (new database on the volume, 2 migrations)"
say "sqlite-v2: backup written, third migration applied"

say "PASS"
echo "e2e-container: static binary $(stat -c %s "$BIN") bytes; start → app listening: postgres up ${UP_MS} ms, postgres 3 s late ${LATE_MS} ms, sqlite new ${SQLITE_MS} ms; supervisor peak RSS ${HWM_KB} kB"
