#!/usr/bin/env bash
# Single-node Slurm for tests and CI (Debian/Ubuntu, run as root; no cgroups, no accounting).
#
#   workflow/scripts/local-slurm.sh start    # install slurm-wlm + munge if missing, write
#                                            # /etc/slurm/{slurm,gres}.conf, start munged,
#                                            # slurmctld, slurmd, wait until the node is idle
#   workflow/scripts/local-slurm.sh status   # exit 0 when the node answers idle/mix/alloc
#   workflow/scripts/local-slurm.sh stop     # kill the daemons this script started (by pid)
#                                            # and remove the files it wrote
#
# Partition `debug` (default), XRAYFLOW_SLURM_GPUS fake GPUs (default 2): gres devices that are
# character devices with /dev/null's numbers (mknod c 1 3; slurmd refuses plain files), so that
# Slurm allocates them by index and sets CUDA_VISIBLE_DEVICES in jobs and steps (--gpus=N,
# srun --gpus-per-task=1) as on a GPU node; where mknod is not allowed, plain files (slurmd then
# sets SLURM_GPUS only, no CUDA_VISIBLE_DEVICES). The config stays at the default path because
# the Snakemake Slurm jobstep strips SLURM_CONF from job environments.
# Environment: XRAYFLOW_SLURM_DIR (scratch dir, default /tmp/xrayflow-slurm),
# XRAYFLOW_SLURM_GPUS (fake GPUs, default 2), XRAYFLOW_SLURM_NO_INSTALL=1 (never call apt-get).
set -euo pipefail

STATE_DIR="${XRAYFLOW_SLURM_DIR:-/tmp/xrayflow-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
GRES="$CONF_DIR/gres.conf"
MARK="# written by xrayflow workflow/scripts/local-slurm.sh"
STARTED="$STATE_DIR/started" # one "name pid" line per daemon this script started
WROTE="$STATE_DIR/wrote"     # one path per file/dir this script created outside STATE_DIR

log() { echo "local-slurm: $*" >&2; }
die() {
  log "$*"
  exit 1
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (writes $CONF, starts daemons)"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v munged >/dev/null && command -v sinfo >/dev/null; then
    return 0
  fi
  [ "${XRAYFLOW_SLURM_NO_INSTALL:-0}" = 1 ] && die "slurm-wlm/munge missing and XRAYFLOW_SLURM_NO_INSTALL=1"
  command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || true
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}

remember_file() { echo "$1" >>"$WROTE"; }

write_config() {
  local host cpus mem_mb gpus="${XRAYFLOW_SLURM_GPUS:-2}"
  case "$gpus" in '' | *[!0-9]* | 0) die "XRAYFLOW_SLURM_GPUS must be a positive integer, not '$gpus'" ;; esac
  host="$(hostname -s)"
  cpus="$(nproc)"
  # RealMemory must not exceed what slurmd detects: 80 % of MemTotal, in MB.
  mem_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)"
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite it"
  fi
  if [ ! -d "$CONF_DIR" ]; then
    mkdir -p "$CONF_DIR"
    remember_file "$CONF_DIR"
  fi
  mkdir -p "$STATE_DIR"/{state,spool,log,run}
  local gres_lines="" i
  for i in $(seq 0 $((gpus - 1))); do
    rm -f "$STATE_DIR/gpu$i"
    if ! mknod "$STATE_DIR/gpu$i" c 1 3 2>/dev/null; then
      log "mknod not allowed: fake GPU $i is a plain file (no CUDA_VISIBLE_DEVICES in jobs)"
      : >"$STATE_DIR/gpu$i"
    fi
    gres_lines+="Name=gpu File=$STATE_DIR/gpu$i"$'\n'
  done
  cat >"$CONF" <<CONF
$MARK
ClusterName=localci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AcctGatherEnergyType=acct_gather_energy/none
MinJobAge=600
GresTypes=gpu
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} Gres=gpu:${gpus} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
  remember_file "$CONF"
  printf '%s\n%s' "$MARK" "$gres_lines" >"$GRES"
  remember_file "$GRES"
}

start_munge() {
  if pgrep -x munged >/dev/null; then
    log "munged already running (not started by this script; left alone)"
    return 0
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    remember_file /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  else
    /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
  fi
  wait_for_file /run/munge/munged.pid 10 || die "munged did not start"
  echo "munged $(cat /run/munge/munged.pid)" >>"$STARTED"
}

wait_for_file() {
  local file="$1" tries=$(($2 * 10))
  while [ "$tries" -gt 0 ]; do
    [ -s "$file" ] && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  return 1
}

start_daemon() { # name
  local name="$1" pidfile="$STATE_DIR/run/$1.pid"
  "/usr/sbin/$name" || die "$name failed to start; see $STATE_DIR/log/$name.log"
  wait_for_file "$pidfile" 20 || die "$name wrote no pid file; see $STATE_DIR/log/$name.log"
  echo "$name $(cat "$pidfile")" >>"$STARTED"
}

node_state() { sinfo -h -o %t 2>/dev/null | head -n1; }

cmd_status() {
  command -v sinfo >/dev/null || {
    log "sinfo not installed"
    return 1
  }
  local state
  state="$(timeout 10 sinfo -h -o %t 2>/dev/null | head -n1 || true)"
  case "$state" in
  idle* | mix* | alloc* | comp*)
    echo "$state"
    return 0
    ;;
  *)
    log "no usable Slurm node (state: '${state:-none}')"
    return 1
    ;;
  esac
}

cmd_start() {
  need_root
  if [ -s "$STARTED" ] && cmd_status >/dev/null 2>&1; then
    log "already running"
    return 0
  fi
  install_packages
  mkdir -p "$STATE_DIR"
  : >"$STARTED"
  : >"$WROTE"
  write_config
  start_munge
  start_daemon slurmctld
  start_daemon slurmd
  local tries=60 state=""
  while [ "$tries" -gt 0 ]; do
    state="$(node_state || true)"
    case "$state" in idle*) break ;; esac
    # a node that came up DOWN/DRAIN after an earlier unclean stop: return it to service
    case "$state" in down* | drain* | drng*)
      scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
      ;;
    esac
    sleep 0.5
    tries=$((tries - 1))
  done
  [ "${state#idle}" != "$state" ] || die "node not idle after 30 s (state '$state'); logs in $STATE_DIR/log"
  log "running: partition debug, node $(hostname -s) idle ($STATE_DIR)"
}

cmd_stop() {
  need_root
  if [ -s "$STARTED" ]; then
    # stop in reverse order of start, each by the pid recorded at start
    tac "$STARTED" | while read -r name pid; do
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        log "stopped $name ($pid)"
      fi
    done
  fi
  if [ -s "$WROTE" ]; then
    tac "$WROTE" | while read -r path; do
      if [ -d "$path" ]; then rmdir "$path" 2>/dev/null || true; else rm -f "$path"; fi
    done
  fi
  rm -rf "$STATE_DIR"
  log "stopped"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  echo "usage: $0 {start|stop|status}" >&2
  exit 2
  ;;
esac
