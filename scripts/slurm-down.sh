#!/usr/bin/env bash
# Stops the private Slurm cluster of scripts/slurm-up.sh: cancels its jobs, then
# stops the daemons named by its own PID files (each checked to still be that
# daemon; never pkill). Keeps the folder (key, state, logs) unless --purge.
#
#   scripts/slurm-down.sh [--purge]
#
# CPIA_SLURM_DIR: as for slurm-up.sh.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/slurm-lib.sh
. "$repo/scripts/slurm-lib.sh"
BASE=$(slurm_dir "$repo")
PURGE=0
case "${1:-}" in
  --purge) PURGE=1 ;;
  "") ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

log() { printf '[slurm-down %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(ms)
[ -d "$BASE" ] || { log "nothing to stop: $BASE does not exist"; exit 0; }
exec 9>"$BASE/.lock"
flock -w 120 9 || { log "another slurm-up/slurm-down holds $BASE/.lock"; exit 1; }

export SLURM_CONF=$BASE/etc/slurm.conf
if [ -f "$SLURM_CONF" ] && pid_alive "$BASE/run/slurmctld.pid" slurmctld >/dev/null; then
  # No job step may outlive slurmd.
  jobs=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    no_jobs() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }
    wait_for 15 no_jobs || log "jobs still listed after 15 s"
  fi
fi

stop() { # stop PIDFILE COMM
  local p
  if p=$(pid_alive "$1" "$2"); then
    log "stopping $2 (pid $p)"
    stop_pid "$p" "$2"
  fi
  rm -f "$1"
}
stop "$BASE/run/slurmd.pid" slurmd
stop "$BASE/run/slurmctld.pid" slurmctld
stop "$BASE/run/slurmdbd.pid" slurmdbd
stop "$BASE/db/mysqld.pid" mariadbd
stop "$BASE/munge/munged.pid" munged
rm -f "$BASE/munge/munge.socket" "$BASE/munge/munge.socket.lock"
log "stopped in $(($(ms) - T0)) ms"
if [ "$PURGE" = 1 ]; then
  exec 9>&-
  rm -rf "${BASE:?}"
  log "removed $BASE"
fi
