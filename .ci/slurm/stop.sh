#!/usr/bin/env bash
# Stops what .ci/slurm/start.sh started, by the PIDs the daemons wrote (cancels jobs first).
set -uo pipefail
DIR=${1:-/tmp/sam-repro-slurm}
[ -f "$DIR/slurm.conf" ] && SLURM_CONF=$DIR/slurm.conf scancel --full --quiet --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld munged; do
  pidfile=$DIR/$daemon.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
done
echo "slurm: stopped ($DIR)"
