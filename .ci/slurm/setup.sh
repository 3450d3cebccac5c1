#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/test_slurm.py: writes /etc/slurm/slurm.conf and gres.conf
# (marked as ours; an existing configuration that is not ours is left alone and the script fails), starts munged
# (unless a working one already answers), slurmctld and slurmd, and waits until the node is idle.
#
#   sudo .ci/slurm/setup.sh STATE_DIR      # state, spool, logs and the daemons' PID files go under STATE_DIR
#   sudo .ci/slurm/teardown.sh STATE_DIR   # cancels jobs, stops exactly the daemons this script started
#
# Why these settings (measured on Debian 12, slurm-wlm 22.05):
# * the config lives at /etc/slurm/slurm.conf: the executor plugin's job step strips SLURM_* variables, so a
#   SLURM_CONF pointing elsewhere is lost inside jobs;
# * proctrack/linuxproc + task/none: no cgroups (containers, CI runners);
# * DefMemPerCPU: otherwise a job without --mem takes the whole node;
# * no accounting (no slurmdbd): the profile's status command is squeue, and MinJobAge keeps finished jobs
#   visible to squeue/scontrol long enough (the plugin falls back to sacct when MinJobAge < 3 x its first
#   status-check delay);
# * two fake GPUs: GresTypes=gpu, Gres=gpu:2 on the node, gres.conf File= character devices made with mknod
#   (a data-parallel training job asks for one task per GPU);
# * partitions `gpu` (default) and `cpu`: the names the profile (slurm/config.yaml) uses, so the tests run the
#   profile unchanged; SlurmdParameters=config_overrides lets the node advertise more memory than the machine has.
set -euo pipefail

state=${1:?usage: setup.sh STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)
marker="# splicer-test-cluster (written by .ci/slurm/setup.sh)"
conf=/etc/slurm/slurm.conf
gres=/etc/slurm/gres.conf
host=$(hostname -s)
cpus=${SPLICER_SLURM_CPUS:-8}
mem_mb=${SPLICER_SLURM_MEM_MB:-64000}

die() { echo "slurm setup: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd, munged and /etc/slurm)"
for bin in slurmctld slurmd munged sinfo scontrol; do command -v "$bin" >/dev/null || die "$bin not installed"; done
for f in "$conf" "$gres"; do
  if [ -e "$f" ] && ! grep -qF "$marker" "$f"; then
    die "$f exists and was not written by this script: refusing to replace a real SLURM configuration"
  fi
done
for pidfile in "$state"/slurmctld.pid "$state"/slurmd.pid; do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then die "already running ($pidfile)"; fi
done
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  die "a slurmctld or slurmd not started by this script is running"
fi

mkdir -p "$state"/ctld "$state"/spool "$state"/log /etc/slurm
: >"$state"/started   # PID files of the daemons started here, one a line (teardown.sh stops exactly these)

# --- munge ---------------------------------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "slurm setup: using the munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
  fi
  owner=$(stat -c %U /etc/munge/munge.key)
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown "$owner" /run/munge /var/lib/munge /var/log/munge /etc/munge
  chmod 0755 /run/munge
  chmod 0700 /var/lib/munge /var/log/munge /etc/munge
  chmod 0600 /etc/munge/munge.key
  # PID and log files in /run/munge: the munge user may not be able to reach STATE_DIR (pytest's are 0700)
  args=(--pid-file=/run/munge/splicer-test-munged.pid --log-file=/run/munge/splicer-test-munged.log --force)
  if [ "$owner" != root ] && command -v runuser >/dev/null; then
    runuser -u "$owner" -- munged "${args[@]}"
  else
    munged "${args[@]}"
  fi
  echo /run/munge/splicer-test-munged.pid >>"$state"/started   # recorded first: teardown stops it even if it hangs
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged does not answer (log: /run/munge/splicer-test-munged.log)"
fi

# --- fake GPUs -----------------------------------------------------------------------------------------------
for i in 0 1; do
  if [ ! -c /dev/fakegpu$i ]; then
    mknod /dev/fakegpu$i c 1 3 || die "cannot mknod /dev/fakegpu$i"
    echo /dev/fakegpu$i >>"$state"/made
  fi
done

# --- configuration -------------------------------------------------------------------------------------------
cat >"$conf" <<EOF
$marker
ClusterName=splicerci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
MinJobAge=900
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=15
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=gpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$host MaxTime=INFINITE State=UP
EOF
cat >"$gres" <<EOF
$marker
NodeName=$host Name=gpu File=/dev/fakegpu[0-1]
EOF

# --- daemons -------------------------------------------------------------------------------------------------
slurmctld -i   # -i: ignore state left by an earlier cluster in STATE_DIR
echo "$state/slurmctld.pid" >>"$state"/started
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.1; done
scontrol ping | grep -q "is UP" || die "slurmctld did not come up (log: $state/log/slurmctld.log)"
slurmd
echo "$state/slurmd.pid" >>"$state"/started
for _ in $(seq 150); do
  [ "$(sinfo -h -N -o %t -n "$host" 2>/dev/null | head -1)" = idle ] && break
  sleep 0.2
done
[ "$(sinfo -h -N -o %t -n "$host" | head -1)" = idle ] || {
  sinfo -N -l >&2 || true
  die "node $host is not idle (logs: $state/log/slurmd.log, slurmctld.log)"
}
echo "slurm setup: one-node cluster up on $host (partitions gpu*, cpu; gres gpu:2); state in $state"
