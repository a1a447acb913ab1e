#!/usr/bin/env bash
# Starts a private, real single-node Slurm cluster (munged + slurmctld + slurmd,
# optionally slurmdbd + MariaDB for sacct) for the Slurm executor's tests,
# without systemd and without touching /etc: key, sockets, slurm.conf, state,
# spool, logs and PID files all live under $CPIA_SLURM_DIR. Installs Debian's
# Slurm packages with apt-get if they are missing. Idempotent: daemons already
# running with the same configuration are left alone.
#
#   eval "$(scripts/slurm-up.sh)"     # prints the environment to use, e.g.
#                                     # SLURM_CONF, CPIA_TEST_SLURM=1
#   scripts/slurm-down.sh             # stops what this script started
#
# Settings (environment):
#   CPIA_SLURM_DIR         private folder   [/tmp/cpia-slurm-<uid>-<hash of this checkout>]
#   CPIA_SLURM_PORT        first of 4 ports (slurmctld, slurmd, slurmdbd, MariaDB)
#                          [20000 + 4 * (hash of the folder mod 2000)]
#   CPIA_SLURM_PARTITION   partition name   [cpia]
#   CPIA_SLURM_CPUS        CPUs advertised  [max(nproc, 8)]: tests mostly sleep
#                          or wait, and more slots than cores let several tests'
#                          arrays run side by side
#   CPIA_SLURM_MEM_MB      memory advertised [90% of the machine's]
#   CPIA_SLURM_ACCOUNTING  1: also slurmdbd + a private MariaDB, so sacct works [0]
#   CPIA_SLURM_NO_INSTALL  1: never call apt-get
#   CPIA_SLURM_TIMEOUT     seconds to wait for each daemon [60]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/slurm-lib.sh
. "$repo/scripts/slurm-lib.sh"
BASE=$(slurm_dir "$repo")
PORT=${CPIA_SLURM_PORT:-$((20000 + 4 * ($(printf '%s' "$BASE" | cksum | cut -d' ' -f1) % 2000)))}
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
PARTITION=${CPIA_SLURM_PARTITION:-cpia}
ACCT=${CPIA_SLURM_ACCOUNTING:-0}
TIMEOUT=${CPIA_SLURM_TIMEOUT:-60}
CLUSTER=cpia

log() { printf '[slurm-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(ms)

[ "$(id -u)" -eq 0 ] || die "must run as root: slurmd starts each job as its submitting user"
case "$BASE" in /*) ;; *) die "CPIA_SLURM_DIR must be absolute, got '$BASE'" ;; esac
# A Unix socket path holds at most 107 bytes.
[ ${#BASE} -le 70 ] || die "CPIA_SLURM_DIR '$BASE' is too long for the munge socket path (at most 70 bytes)"

# ------------------------------------------------------------------ packages
cmds=(munged munge unmunge slurmctld slurmd sbatch squeue sinfo scontrol scancel sacct)
pkgs=(slurmctld slurmd slurm-client munge)
if [ "$ACCT" = 1 ]; then
  cmds+=(slurmdbd sacctmgr mariadbd mariadb-install-db mariadb)
  pkgs+=(slurmdbd mariadb-server)
fi
missing=0
for c in "${cmds[@]}"; do command -v "$c" >/dev/null 2>&1 || missing=1; done
if [ "$missing" = 1 ]; then
  [ "${CPIA_SLURM_NO_INSTALL:-0}" = 1 ] && die "Slurm or munge programs missing and CPIA_SLURM_NO_INSTALL=1"
  log "installing ${pkgs[*]} with apt-get"
  t=$(ms)
  apt=(apt-get -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  export DEBIAN_FRONTEND=noninteractive
  { # apt's output goes to stderr: stdout is the environment to eval
    apt-cache show slurmctld >/dev/null 2>&1 || "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" \
      || { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}"; }
  } >&2
  log "installed in $(($(ms) - t)) ms"
fi

# ------------------------------------------------------------------ layout
MUNGE=$BASE/munge
MUNGE_SOCK=$MUNGE/munge.socket
MUNGE_PID=$MUNGE/munged.pid
MUNGE_KEY=$MUNGE/munge.key
CONF=$BASE/etc/slurm.conf
CTLD_PID=$BASE/run/slurmctld.pid
SLURMD_PID=$BASE/run/slurmd.pid
DBD_PID=$BASE/run/slurmdbd.pid
DB=$BASE/db
DB_SOCK=$DB/mysqld.sock
DB_PID=$DB/mysqld.pid

mkdir -p "$BASE"/{etc,run,log,state,spool} "$MUNGE"
# munged refuses a key, log or seed folder writable by others, and needs its
# socket folder to be traversable.
chmod 755 "$BASE"
chmod 711 "$MUNGE"

# One bring-up or shutdown at a time (fd 9 is closed for the daemons).
exec 9>"$BASE/.lock"
flock -w 120 9 || die "another slurm-up/slurm-down holds $BASE/.lock"

# ------------------------------------------------------------------ munge
[ -s "$MUNGE_KEY" ] || mungekey --create --keyfile="$MUNGE_KEY" 2>/dev/null \
  || dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
chmod 400 "$MUNGE_KEY"
munge_ok() { munge -S "$MUNGE_SOCK" -n 2>/dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1; }
if p=$(pid_alive "$MUNGE_PID" munged) && munge_ok; then
  log "munged already running (pid $p)"
else
  [ -n "${p:-}" ] && stop_pid "$p" munged
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock" "$MUNGE_PID"
  munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_PID" \
    --log-file="$BASE/log/munged.log" --seed-file="$MUNGE/munged.seed" 9>&- \
    || { tail -5 "$BASE/log/munged.log" >&2; die "munged did not start"; }
  wait_for 10 munge_ok || { tail -5 "$BASE/log/munged.log" >&2; die "munged does not answer"; }
  log "munged started (pid $(cat "$MUNGE_PID"))"
fi

# ------------------------------------------------------------------ slurm.conf
NODE=$(hostname -s)
[ -n "$NODE" ] || die "empty host name"
hw_cpus=$(nproc)
hw_mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
CPUS=${CPIA_SLURM_CPUS:-$((hw_cpus > 8 ? hw_cpus : 8))}
MEM=${CPIA_SLURM_MEM_MB:-$((hw_mem * 9 / 10))}
MEM_PER_CPU=$((MEM / CPUS < 1024 ? MEM / CPUS : 1024))

if [ "$ACCT" = 1 ]; then
  # slurmctld and sacct reach slurmdbd through munge: AccountingStoragePass
  # names the socket (AuthInfo is not used for these connections).
  acct_conf="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK"
else
  acct_conf="# no slurmdbd: sacct reports that accounting is disabled
AccountingStorageType=accounting_storage/none"
fi
new_conf="# written by cpia scripts/slurm-up.sh: a private single-node cluster
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
# no cgroups and no systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$acct_conf
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
# the default batch_sched_delay=3 starts pending array tasks only every ~3 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$MEM_PER_CPU
# trust this file: never drain the node because CPUs/memory differ from the hardware
SlurmdParameters=config_overrides
ReturnToService=2
# finished jobs stay visible to squeue and scontrol for 1 h
MinJobAge=3600
MaxArraySize=100001
MaxJobCount=200000
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

export SLURM_CONF=$CONF
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  # Ports and node definitions cannot be changed by 'scontrol reconfigure'.
  for d in slurmd:"$SLURMD_PID" slurmctld:"$CTLD_PID"; do
    if p=$(pid_alive "${d#*:}" "${d%%:*}"); then
      log "configuration changed: restarting ${d%%:*}"
      stop_pid "$p" "${d%%:*}"
    fi
  done
  printf '%s\n' "$new_conf" >"$CONF.tmp"
  mv -f "$CONF.tmp" "$CONF"
fi
mkdir -p "$BASE/spool/slurmd"

# ------------------------------------------------------------------ accounting
if [ "$ACCT" = 1 ]; then
  mkdir -p "$DB"
  db_ok() { mariadb --no-defaults -S "$DB_SOCK" -u root -e 'select 1' >/dev/null 2>&1; }
  if [ ! -d "$DB/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$DB/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1 \
      || { tail -20 "$BASE/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  if p=$(pid_alive "$DB_PID" mariadbd) && db_ok; then
    log "mariadbd already running (pid $p)"
  else
    rm -f "$DB_PID" "$DB_SOCK"
    port_free "$DB_PORT" || die "port $DB_PORT is in use (set CPIA_SLURM_PORT)"
    setsid mariadbd --no-defaults --user=root --datadir="$DB/data" --socket="$DB_SOCK" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$DB_PID" \
      --log-error="$BASE/log/mariadb.err" --innodb-buffer-pool-size=64M \
      </dev/null >/dev/null 2>&1 9>&- &
    wait_for "$TIMEOUT" db_ok || { tail -20 "$BASE/log/mariadb.err" >&2; die "mariadbd does not answer"; }
    log "mariadbd started (pid $(cat "$DB_PID"))"
  fi
  mariadb --no-defaults -S "$DB_SOCK" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  dbd_conf="AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DBD_PID
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db"
  if [ ! -f "$BASE/etc/slurmdbd.conf" ] || [ "$(cat "$BASE/etc/slurmdbd.conf")" != "$dbd_conf" ]; then
    if p=$(pid_alive "$DBD_PID" slurmdbd); then stop_pid "$p" slurmdbd; fi
    printf '%s\n' "$dbd_conf" >"$BASE/etc/slurmdbd.conf"
  fi
  chmod 600 "$BASE/etc/slurmdbd.conf" # slurmdbd refuses a file others can read
  if p=$(pid_alive "$DBD_PID" slurmdbd); then
    log "slurmdbd already running (pid $p)"
  else
    rm -f "$DBD_PID"
    port_free "$DBD_PORT" || die "port $DBD_PORT is in use (set CPIA_SLURM_PORT)"
    SLURM_CONF=$CONF slurmdbd 9>&- || { tail -20 "$BASE/log/slurmdbd.log" >&2; die "slurmdbd did not start"; }
    wait_for "$TIMEOUT" port_listening "$DBD_PORT" \
      || { tail -20 "$BASE/log/slurmdbd.log" >&2; die "slurmdbd does not listen on $DBD_PORT"; }
    log "slurmdbd started (pid $(cat "$DBD_PID"))"
  fi
  if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not register cluster $CLUSTER"
  fi
fi

if [ "$ACCT" != 1 ]; then
  # Accounting was on in an earlier bring-up: its daemons are not wanted now.
  for d in slurmdbd:"$DBD_PID" mariadbd:"$DB_PID"; do
    if p=$(pid_alive "${d#*:}" "${d%%:*}"); then
      log "accounting off: stopping ${d%%:*}"
      stop_pid "$p" "${d%%:*}"
    fi
  done
fi

# ------------------------------------------------------------------ slurmctld, slurmd
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
if p=$(pid_alive "$CTLD_PID" slurmctld); then
  log "slurmctld already running (pid $p)"
else
  rm -f "$CTLD_PID"
  port_free "$CTLD_PORT" || die "port $CTLD_PORT is in use by another program (set CPIA_SLURM_PORT)"
  slurmctld -f "$CONF" 9>&- || { tail -20 "$BASE/log/slurmctld.log" >&2; die "slurmctld did not start"; }
  wait_for 10 test -s "$CTLD_PID" || die "slurmctld wrote no pid file"
  log "slurmctld started (pid $(cat "$CTLD_PID"))"
fi
wait_for "$TIMEOUT" ctld_up || { tail -20 "$BASE/log/slurmctld.log" >&2; die "slurmctld does not answer"; }

if p=$(pid_alive "$SLURMD_PID" slurmd); then
  log "slurmd already running (pid $p)"
else
  rm -f "$SLURMD_PID"
  port_free "$SLURMD_PORT" || die "port $SLURMD_PORT is in use by another program (set CPIA_SLURM_PORT)"
  slurmd -f "$CONF" -N "$NODE" 9>&- || { tail -20 "$BASE/log/slurmd.log" >&2; die "slurmd did not start"; }
  wait_for 10 test -s "$SLURMD_PID" || die "slurmd wrote no pid file"
  log "slurmd started (pid $(cat "$SLURMD_PID"))"
fi

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }
node_ready() { case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac; }
if ! wait_for 5 node_ready; then
  # A node left down or drained by an earlier run is put back in service.
  scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
  wait_for "$TIMEOUT" node_ready || {
    tail -20 "$BASE/log/slurmd.log" >&2
    die "node $NODE not ready (state: $(node_state))"
  }
fi

cat >"$BASE/env.sh" <<EOF
export SLURM_CONF=$CONF
export CPIA_SLURM_DIR=$BASE
export CPIA_SLURM_PARTITION=$PARTITION
export CPIA_SLURM_ACCOUNTING=$ACCT
export CPIA_TEST_SLURM=1
EOF
log "cluster ready in $(($(ms) - T0)) ms: node $NODE ($(node_state), $CPUS CPUs, ${MEM} MB), partition $PARTITION, port $CTLD_PORT, accounting $ACCT"
cat "$BASE/env.sh"
