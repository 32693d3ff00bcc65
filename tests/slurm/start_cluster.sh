#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for tests/test_slurm.py and for trying the SLURM
# profile (profiles/slurm) on one machine. Run as root; it installs nothing:
#
#   apt-get install -y slurm-wlm munge        # Debian 12: SLURM 22.05
#   tests/slurm/start_cluster.sh              # start (or check it is up); then sinfo, sbatch, srun
#   tests/slurm/start_cluster.sh stop         # stop the daemons it started, cancel their jobs
#   tests/slurm/start_cluster.sh status       # exit 0 when the node answers idle or busy
#
# No systemd, cgroups or accounting: proctrack/linuxproc, task/none, accounting_storage/none,
# so the profile's status command must be squeue (sacct never sees a job finish). Partitions
# `cpu` (the default) and `gpu`, the profile's placeholder names, both on the one node, which
# advertises at least $LOTA_SLURM_MIN_CPUS (8) CPUs so that the profile's cpus_per_task fits on
# a small machine (task/none binds nothing: jobs share the real cores). No GPUs (no GRES).
#
# State, spool, logs, pid files and slurm.conf live under $LOTA_SLURM_DIR (default
# /tmp/lota-slurm); /etc/slurm/slurm.conf becomes a symlink to that slurm.conf, because the
# jobs' own srun calls find the config there (the SLURM executor plugin drops SLURM_CONF from
# a job step's environment). The script refuses to replace an /etc/slurm/slurm.conf that is
# not its symlink, and stop removes the symlink. munged runs on the system defaults
# (/etc/munge/munge.key, created if missing; /run/munge), and a munged that already answers is
# reused. Idempotent: start with the cluster up does nothing. On failure: one line on stderr
# and a non-zero exit. Ports: $LOTA_SLURM_PORT (6817) and the next one.
set -euo pipefail

DIR=${LOTA_SLURM_DIR:-/tmp/lota-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MIN_CPUS=${LOTA_SLURM_MIN_CPUS:-8}
PORT=${LOTA_SLURM_PORT:-6817}
TIMEOUT=${LOTA_SLURM_TIMEOUT:-60}
MARKER="# Written by tests/slurm/start_cluster.sh"
export SLURM_CONF=$CONF

die() {
    echo "start_cluster.sh: $*" >&2
    exit 1
}

pid_alive() { # pid file
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() { # pid file, name
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    # A pid file from before a restart may name another program's process now.
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        echo "stopped $2 ($pid)" >&2
    fi
    rm -f "$1"
}

node_state() {
    timeout 10 sinfo --noheader --nodes localhost --format %T 2>/dev/null | head -n 1 || true
}

munge_ok() {
    timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1
}

ours() { # whether /etc/slurm/slurm.conf is this cluster's symlink
    [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]
}

stop() {
    # Jobs still running would outlive slurmd under proctrack/linuxproc: cancel them first.
    if pid_alive "$DIR/slurmctld.pid"; then
        timeout 10 scancel --user "$(id -un)" >/dev/null 2>&1 || true
        sleep 1
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munged.pid" munged # only a munged this script started
    if ours; then rm -f "$SYSTEM_CONF"; fi
}

status() {
    case "$(node_state)" in
    idle* | mixed* | allocated* | completing*) return 0 ;;
    *) return 1 ;;
    esac
}

write_conf() {
    local hw cpus memory
    hw=$(slurmd -C 2>/dev/null | head -n 1) || die "slurmd -C failed: cannot read this machine's CPUs and memory"
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [ -n "$cpus" ] && [ -n "$memory" ] || die "slurmd -C gave no CPUs= or RealMemory=: '$hw'"
    [ "$cpus" -ge "$MIN_CPUS" ] || cpus=$MIN_CPUS
    cat >"$CONF.tmp" <<EOF
$MARKER: a single-node test cluster on localhost.
ClusterName=lota
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# The node's CPUs and memory are the ones below, not what slurmd finds.
SlurmdParameters=config_overrides
# squeue is the status command: finished jobs stay listed for MinJobAge seconds.
MinJobAge=3600
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
# The partition names of profiles/slurm's placeholders, both on the one node.
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    munge_ok && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile /etc/munge/munge.key >/dev/null 2>&1 || die "mungekey could not create /etc/munge/munge.key"
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
        chmod 600 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
        chmod 700 /etc/munge
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid >/dev/null 2>&1 || die "munged failed to start: see /var/log/munge/munged.log"
    else
        munged --force --pid-file=/run/munge/munged.pid >/dev/null 2>&1 || die "munged failed to start: see /var/log/munge/munged.log"
    fi
    for _ in $(seq 50); do
        if munge_ok; then
            cp /run/munge/munged.pid "$DIR/munged.pid"
            return 0
        fi
        sleep 0.1
    done
    die "munged started but munge -n | unmunge fails: see /var/log/munge/munged.log"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it starts munged, slurmctld and slurmd)"
    for binary in slurmctld slurmd sinfo munged munge; do
        command -v "$binary" >/dev/null || die "$binary not found: apt-get install -y slurm-wlm munge"
    done
    # A link left by a run of this script that was killed before its stop (the config gone, or
    # its slurmctld) is replaced; any other config is not touched.
    if [ -L "$SYSTEM_CONF" ] && ! ours; then
        local previous
        previous=$(readlink "$SYSTEM_CONF")
        if [ ! -e "$previous" ] || { head -n 1 "$previous" | grep -q "^$MARKER" &&
            ! pid_alive "$(dirname "$previous")/slurmctld.pid"; }; then
            rm -f "$SYSTEM_CONF"
        fi
    fi
    if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
        ours || die "$SYSTEM_CONF exists and is not a symlink to $CONF: this machine has another SLURM config (stop that cluster first)"
    fi
    mkdir -p "$DIR"
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && status; then
        echo "SLURM is already up (config $CONF)" >&2
        return 0
    fi
    stop                                 # half-started leftovers
    rm -rf "$DIR/state" "$DIR/spool"     # a fresh cluster: no jobs or node states of earlier runs
    mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
    write_conf
    ln -sfn "$CONF" "$SYSTEM_CONF"
    start_munge
    slurmctld -f "$CONF" -i >/dev/null 2>&1 || die "slurmctld failed to start: see $DIR/slurmctld.log"
    slurmd -f "$CONF" -N localhost >/dev/null 2>&1 || die "slurmd failed to start: see $DIR/slurmd.log"
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state)
        case "$state" in
        idle*)
            echo "SLURM is up: node localhost idle, partitions cpu (default) and gpu (config $CONF)" >&2
            return 0
            ;;
        down* | drain* | fail*)
            timeout 10 scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
            ;;
        esac
        pid_alive "$DIR/slurmctld.pid" || die "slurmctld exited: see $DIR/slurmctld.log"
        sleep 0.5
    done
    die "node localhost not idle after ${TIMEOUT}s (state '${state:-no answer}'): see $DIR/slurmctld.log and $DIR/slurmd.log"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 [start|stop|status]" ;;
esac
