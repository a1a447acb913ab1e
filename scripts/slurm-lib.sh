# Functions shared by slurm-up.sh and slurm-down.sh (sourced, not run).

# The private folder: $CPIA_SLURM_DIR, else one per user and checkout, so that
# two checkouts on one machine run two clusters side by side.
slurm_dir() {
  local h
  h=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
  echo "${CPIA_SLURM_DIR:-/tmp/cpia-slurm-$(id -u)-$((h % 100000))}"
}

# pid_alive PIDFILE COMM: prints the pid if the file names a live process
# whose name is COMM (a pid file left by a dead daemon may name a recycled pid).
pid_alive() {
  local p
  [ -s "$1" ] || return 1
  p=$(tr -dc '0-9' <"$1")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || return 1
  echo "$p"
}

# stop_pid PID COMM: SIGTERM, then SIGKILL after 20 s, only while PID is COMM.
stop_pid() {
  local p=$1 c=$2 i
  kill -TERM "$p" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$p" 2>/dev/null || return 0
    sleep 0.2
  done
  if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$c" ]; then
    log "$c (pid $p) ignored SIGTERM for 20 s: SIGKILL"
    kill -KILL "$p" 2>/dev/null || true
  fi
}

# wait_for SECONDS CMD...: runs CMD every 0.1 s until it succeeds.
wait_for() {
  local end=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
port_free() { ! port_listening "$1"; }
