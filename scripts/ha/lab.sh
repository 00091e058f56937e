#!/usr/bin/env bash
# A two-node Patroni cluster on loopback for trying pgmux's HA features by hand and for
# scripts/ha/switchover.sh: etcd, two Patroni members (PostgreSQL 15), one pgmux beside each
# and HAProxy in front, as a Pigsty node lays them out (docs/HA.md).
#
#   scripts/ha/lab.sh up [POOLER]   # POOLER: pgmux (default) or pgbouncer (PGBOUNCER_BIN)
#   scripts/ha/lab.sh down
#
# Everything lives in $HA_LAB (default /tmp/pgmux-ha); processes run as the postgres user
# where PostgreSQL needs it. Ports (loopback only): etcd 23790, Patroni REST 8008/8009,
# PostgreSQL 5441/5442, poolers 6441/6442 (metrics 9641/9642, agent 9651/9652),
# HAProxy primary 5433, replica 5434, stats 9100.
set -euo pipefail

LAB=${HA_LAB:-/tmp/pgmux-ha}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGMUX_BIN=${PGMUX_BIN:-$ROOT/target/release/pgmux}
SCOPE=pgmux-ha

need() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v patroni >/dev/null || missing+=(patroni)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v curl >/dev/null || missing+=(curl)
    if ((${#missing[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            echo "installing ${missing[*]} (apt-get install)" >&2
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "needs ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
            exit 1
        fi
    fi
}

wait_http() { # url, seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    return 1
}

patroni_yml() { # n
    local n=$1 port=$((5440 + $1)) api=$((8007 + $1))
    cat <<YML
scope: $SCOPE
namespace: /service/
name: pg$n
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
etcd3:
  hosts: 127.0.0.1:23790
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: 'on'
  initdb:
    - encoding: UTF8
    - auth-local: trust
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:$port
  connect_address: 127.0.0.1:$port
  data_dir: $LAB/pg$n/data
  bin_dir: $PGBIN
  pgpass: $LAB/pg$n/pgpass
  authentication:
    replication: {username: replicator, password: rep-pass}
    superuser: {username: postgres, password: postgres-pass}
  parameters:
    unix_socket_directories: '$LAB/pg$n'
tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}
YML
}

pooler_ini() { # n kind
    local n=$1 port=$((5440 + $1))
    cat <<INI
[databases]
postgres = host=$LAB/pg$n port=$port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $((6440 + n))
unix_socket_dir =
auth_type = md5
auth_file = $LAB/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
logfile = $LAB/pooler$n.log
pidfile = $LAB/pooler$n.pid
INI
    if [[ $2 == pgbouncer ]]; then
        # PgBouncer refuses to run as root.
        echo "user = postgres"
    fi
    if [[ $2 == pgmux ]]; then
        cat <<INI
exporter_port = $((9640 + n))
patroni_url = http://127.0.0.1:$((8007 + n))
patroni_databases = postgres
patroni_etcd_url = http://127.0.0.1:23790
health_agent_port = $((9650 + n))
INI
    fi
}

haproxy_cfg() { # kind
    local check
    if [[ $1 == pgmux ]]; then
        # Health answered by the pooler: it stays up while it can reach the leader.
        check='check port %METRICS% agent-check agent-port %AGENT% agent-send "primary\n" agent-inter 500ms'
    else
        # The pooler cannot answer: Patroni's own /primary, as Pigsty checks.
        check='check port %API%'
    fi
    cat <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    timeout check 2s
listen stats
    mode http
    bind 127.0.0.1:9100
    stats enable
    stats uri /stats
listen primary
    bind 127.0.0.1:5433
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s rise 2 fall 3 on-marked-down shutdown-sessions slowstart 0 maxconn 500
CFG
    for n in 1 2; do
        local c=${check//%METRICS%/$((9640 + n))}
        c=${c//%AGENT%/$((9650 + n))}
        c=${c//%API%/$((8007 + n))}
        echo "    server pg$n 127.0.0.1:$((6440 + n)) $c"
    done
}

up() {
    local kind=${1:-pgmux}
    need
    down >/dev/null 2>&1 || true
    rm -rf "$LAB"
    mkdir -p "$LAB"/pg1 "$LAB"/pg2 "$LAB"/etcd
    echo "$kind" >"$LAB/kind"
    printf '"postgres" "postgres-pass"\n"app" "app-pass"\n' >"$LAB/userlist.txt"
    for n in 1 2; do patroni_yml $n >"$LAB/pg$n/patroni.yml"; done
    chown -R postgres: "$LAB"
    chmod 700 "$LAB"/pg1 "$LAB"/pg2

    etcd --name lab --data-dir "$LAB/etcd" \
        --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster lab=http://127.0.0.1:23800 >"$LAB/etcd.log" 2>&1 &
    echo $! >"$LAB/etcd.pid"
    wait_http http://127.0.0.1:23790/health 20

    for n in 1 2; do
        setsid runuser -u postgres -- patroni "$LAB/pg$n/patroni.yml" >"$LAB/patroni$n.log" 2>&1 &
        echo $! >"$LAB/patroni$n.pid"
        wait_http http://127.0.0.1:$((8007 + n))/health 90
    done
    # The replica is streaming once Patroni reports it running.
    wait_http http://127.0.0.1:8009/replica 90
    psql -qX -h "$LAB/pg1" -p 5441 -U postgres -c "CREATE USER app PASSWORD 'app-pass'" -c "GRANT ALL ON SCHEMA public TO app" postgres >/dev/null 2>&1 ||
        psql -qX -h "$LAB/pg2" -p 5442 -U postgres -c "CREATE USER app PASSWORD 'app-pass'" -c "GRANT ALL ON SCHEMA public TO app" postgres >/dev/null

    for n in 1 2; do
        pooler_ini $n "$kind" >"$LAB/pooler$n.ini"
        if [[ $kind == pgmux ]]; then
            "$PGMUX_BIN" -d "$LAB/pooler$n.ini"
        else
            "${PGBOUNCER_BIN:?PGBOUNCER_BIN names PgBouncer 1.25.2}" -d "$LAB/pooler$n.ini"
        fi
    done
    haproxy_cfg "$kind" >"$LAB/haproxy.cfg"
    haproxy -D -f "$LAB/haproxy.cfg" -p "$LAB/haproxy.pid"
    # HAProxy starts with every server up until checked: wait until one serves the primary
    # service (the other one down, or drained by pgmux's agent).
    for ((i = 0; i < 150; i++)); do
        up=$(curl -fs "http://127.0.0.1:9100/stats;csv" | grep -c '^primary,pg[12],UP,' || true)
        if [[ $up == 1 ]] && PGPASSWORD=postgres-pass psql -qXAt -h 127.0.0.1 -p 5433 -U postgres -c 'select 1' postgres >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    echo "lab up in $LAB ($kind): primary service 127.0.0.1:5433, patronictl -c $LAB/pg1/patroni.yml list"
}

down() {
    for f in haproxy pooler1 pooler2 patroni1 patroni2 etcd; do
        [[ -f $LAB/$f.pid ]] || continue
        local pid
        pid=$(cat "$LAB/$f.pid")
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    pkill -KILL -f "patroni $LAB/pg[12]/patroni.yml" 2>/dev/null || true
    # Patroni stops its PostgreSQL on exit; a postmaster left over from a killed Patroni too.
    for n in 1 2; do
        [[ -f $LAB/pg$n/data/postmaster.pid ]] || continue
        local pid
        pid=$(head -1 "$LAB/pg$n/data/postmaster.pid")
        kill -INT "$pid" 2>/dev/null || true
    done
}

case ${1:-} in
up) up "${2:-pgmux}" ;;
down) down ;;
*) echo "usage: $0 up [pgmux|pgbouncer] | down" >&2; exit 2 ;;
esac
