#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost with fake GPUs (for tests and CI).
#
# Idempotent: when the node already answers `sinfo` as idle/mixed/allocated it
# prints "already running" and exits 0. Otherwise it installs Debian's
# slurmctld, slurmd, slurm-client and munge with apt-get if they are missing,
# writes /etc/slurm/{slurm.conf,gres.conf}, starts munged, slurmctld and slurmd
# by hand (no systemd needed) and waits until the node is idle.
# On failure it prints the reason on stderr (first line "start_slurm: ...")
# and exits non-zero. Must run as root.
#
# No slurmdbd: `sacct` does not work, so Snakemake profiles must use
# `slurm-status-command: squeue` with this cluster.
#
# Environment (optional):
#   SLURM_LOCAL_GPUS   number of fake GPUs (default 2)
#   SLURM_LOCAL_CPUS   CPUs declared for the node (default: nproc)
#   SLURM_LOCAL_WAIT   seconds to wait for the node to become idle (default 60)
set -u

start_s=$(date +%s.%N)
GPUS=${SLURM_LOCAL_GPUS:-2}
WAIT=${SLURM_LOCAL_WAIT:-60}
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm

fail() {
    echo "start_slurm: $*" >&2
    exit 1
}

elapsed() {
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
        "$start_s" "$(date +%s.%N)" 2>/dev/null || echo "?"
}

[ "$(id -u)" = 0 ] || fail "must run as root (uid is $(id -u)); SLURM daemons cannot be started"
HOST=$(hostname -s) || fail "hostname -s failed"
[ -n "$HOST" ] || fail "empty short hostname"

node_state() {
    command -v sinfo >/dev/null 2>&1 || return 1
    timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1
}

is_up() {
    case "$(node_state)" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        *) return 1 ;;
    esac
}

daemon_alive() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# A cluster started here has /run/slurmctld.pid; then slurmd and munged must be
# alive too (slurmctld keeps reporting a dead slurmd's node as idle for minutes).
# Without that pid file an answering cluster is someone else's: leave it alone.
already_up() {
    is_up || return 1
    [ -f /run/slurmctld.pid ] || return 0
    daemon_alive slurmctld && daemon_alive slurmd && munge_ok
}

if already_up; then
    echo "start_slurm: already running (node $HOST is $(node_state))"
    exit 0
fi

# ---------------------------------------------------------------- packages
need_install=0
for bin in slurmctld slurmd sbatch squeue sinfo munged munge unmunge; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
    command -v apt-get >/dev/null 2>&1 || fail "SLURM is not installed and apt-get is not available"
    pkgs="slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    echo "start_slurm: installing $pkgs" >&2
    if ! apt-get install -y -q --no-install-recommends $pkgs >/tmp/start_slurm.apt.log 2>&1; then
        apt-get update -q >>/tmp/start_slurm.apt.log 2>&1 \
            && apt-get install -y -q --no-install-recommends $pkgs >>/tmp/start_slurm.apt.log 2>&1 \
            || { tail -n 20 /tmp/start_slurm.apt.log >&2; fail "apt-get install $pkgs failed (log: /tmp/start_slurm.apt.log)"; }
    fi
fi

# ---------------------------------------------------------------- munge
if ! munge_ok; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create >/dev/null 2>&1 || fail "cannot create /etc/munge/munge.key"
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key \
        || fail "cannot fix owner/mode of /etc/munge/munge.key"
    install -d -o munge -g munge -m 0755 /run/munge || fail "cannot create /run/munge"
    # A stale pid/socket from a dead munged makes the new one refuse to start.
    if [ -f /run/munge/munged.pid ] && ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    fi
    su -s /bin/sh munge -c /usr/sbin/munged >/dev/null 2>&1 || true
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || fail "munged does not answer (munge -n | unmunge fails)"
fi

# ---------------------------------------------------------------- config
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 * 0.9 / 1024}' /proc/meminfo)
[ "$MEM_MB" -gt 0 ] 2>/dev/null || fail "cannot read MemTotal from /proc/meminfo"
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" || fail "cannot create SLURM directories"

gres_line=""
gpu_files=""
if [ "$GPUS" -gt 0 ]; then
    for i in $(seq 0 $((GPUS - 1))); do
        ln -sf /dev/null "/dev/fakegpu$i" || fail "cannot create /dev/fakegpu$i"
    done
    gres_line="Gres=gpu:$GPUS"
    gpu_files="NodeName=$HOST Name=gpu File=/dev/fakegpu[0-$((GPUS - 1))]"
fi

cat >"$CONF_DIR/gres.conf" <<EOF
AutoDetect=off
$gpu_files
EOF

cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by ci/start_slurm.sh: one-node test cluster on localhost.
ClusterName=localcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue for 10 min: the Snakemake SLURM plugin
# needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks for squeue.
MinJobAge=600
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $gres_line State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# ---------------------------------------------------------------- daemons
# Stop daemons of an earlier, broken start (only the PIDs in our pid files).
for name in slurmd slurmctld; do
    pidfile=/run/$name.pid
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    fi
done

slurmctld >>"$LOG_DIR/start.log" 2>&1 || { tail -n 20 "$LOG_DIR/slurmctld.log" >&2; fail "slurmctld did not start"; }
for _ in $(seq 100); do timeout 5 sinfo -h >/dev/null 2>&1 && break; sleep 0.1; done
timeout 5 sinfo -h >/dev/null 2>&1 || { tail -n 20 "$LOG_DIR/slurmctld.log" >&2; fail "slurmctld does not answer sinfo"; }
slurmd >>"$LOG_DIR/start.log" 2>&1 || { tail -n 20 "$LOG_DIR/slurmd.log" >&2; fail "slurmd did not start"; }

deadline=$(($(date +%s) + WAIT))
resumed=0
while :; do
    state=$(node_state)
    case "$state" in
        idle* | mixed* | allocated*) break ;;
        drain* | inval* | down*)
            # Drain state survives restarts in /var/spool/slurmctld.
            if [ "$resumed" = 0 ]; then
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1
                resumed=1
            fi
            ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        reason=$(timeout 5 sinfo -h -R -n "$HOST" -o '%E' 2>/dev/null)
        tail -n 20 "$LOG_DIR/slurmd.log" >&2
        fail "node $HOST not idle after ${WAIT}s (state '${state}', reason '${reason}')"
    fi
    sleep 0.2
done

echo "start_slurm: cluster up (node $HOST: $CPUS CPUs, ${MEM_MB} MB, $GPUS fake GPUs) in $(elapsed) s"
