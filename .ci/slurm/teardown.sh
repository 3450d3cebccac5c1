#!/usr/bin/env bash
# Stop the test cluster of .ci/slurm/setup.sh STATE_DIR: cancel its jobs, stop exactly the daemons setup.sh
# started (by the PIDs in their PID files, never by name), remove the configuration files it wrote.
set -uo pipefail

state=${1:?usage: teardown.sh STATE_DIR}
marker="# splicer-test-cluster (written by .ci/slurm/setup.sh)"
[ -f "$state/started" ] || { echo "slurm teardown: nothing started in $state"; exit 0; }

if grep -q slurmctld.pid "$state/started" && scontrol ping 2>/dev/null | grep -q "is UP"; then
  scancel --user "$(id -un)" 2>/dev/null
  for _ in $(seq 100); do [ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i 2>/dev/null)" ] && break; sleep 0.2; done
fi

# slurmd before slurmctld before munged (the reverse of the start order)
tac "$state/started" | while read -r pidfile; do
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  name=$(basename "$pidfile" .pid); name=${name#splicer-test-}
  # a stale PID file whose PID now belongs to another program is left alone
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || { echo "slurm teardown: $name ($pid) not running"; continue; }
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; fi
  echo "slurm teardown: stopped $(basename "$pidfile" .pid) ($pid)"
done
rm -f "$state/started"
if [ -f "$state/made" ]; then xargs rm -f <"$state/made"; rm -f "$state/made"; fi   # the fake GPU device
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
  if [ -f "$f" ] && grep -qF "$marker" "$f"; then rm -f "$f"; fi
done
exit 0
