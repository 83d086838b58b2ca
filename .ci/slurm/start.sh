#!/usr/bin/env bash
# A real single-node SLURM for the tests: munged + slurmctld + slurmd, no slurmdbd (so `sacct` fails, as
# on clusters without accounting), no systemd, no cgroups. Run as root:
#
#   .ci/slurm/start.sh [STATE_DIR]      # installs slurm-wlm + munge if missing, starts the daemons
#   source STATE_DIR/env.sh             # SLURM_CONF and SAM_REPRO_SLURM=1: the SLURM tests must run
#   .ci/slurm/stop.sh [STATE_DIR]       # stops the daemons by the PIDs they wrote
#
# Partitions: `debug` (default, never preempted), `low` (preemptable: GraceTime 20 s) and `high` (preempts
# `low` when it needs the memory: declare 64 GB, ask for 40 GB twice). Short KillWait, MinJobAge and
# cred_expire so that requeued jobs start again at once.
set -euo pipefail
DIR=${1:-/tmp/sam-repro-slurm}
HOST=$(hostname -s)
CPUS=${SAM_REPRO_SLURM_CPUS:-16}   # declared CPUs (config_overrides: may exceed the real cores)
# Ports from the state directory, so a second cluster (another checkout's CI) on this machine does not clash.
PORT=$(( 20000 + $(printf '%s' "$DIR" | cksum | cut -d' ' -f1) % 20000 * 2 ))

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q slurm-wlm munge >/dev/null
fi

mkdir -p "$DIR"/{state,spool,log} /run/munge /var/lib/munge /var/log/munge /etc/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  # In the foreground of a background shell job, so its PID is known here (munged runs as munge and
  # cannot write a pid file into this root-owned directory) and stop.sh can end it by that PID.
  su -s /bin/sh munge -c '/usr/sbin/munged --foreground >/dev/null 2>&1 & echo $!' > "$DIR/munged.pid"
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

cat > "$DIR/slurm.conf" <<CONF
ClusterName=samci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=10
MinJobAge=30
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$HOST CPUs=$CPUS RealMemory=64000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=low Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
CONF
cat > "$DIR/env.sh" <<ENV
export SLURM_CONF=$DIR/slurm.conf
export SAM_REPRO_SLURM=1
ENV
export SLURM_CONF=$DIR/slurm.conf

/usr/sbin/slurmctld -c -f "$SLURM_CONF"   # -c: a clean state (no jobs from an earlier start)
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && { echo "slurm: node $HOST idle ($DIR)"; exit 0; }
  sleep 0.2
done
echo "slurm: node $HOST did not become idle (state: ${state:-none}); logs in $DIR/log" >&2
tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
exit 1
