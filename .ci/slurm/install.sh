#!/usr/bin/env bash
# Install a SLURM controller + compute daemon + client and munge from the distribution (Debian / Ubuntu), when
# they are missing, for tests/test_slurm.py. Services are NOT started (the tests start their own daemons with
# .ci/slurm/setup.sh and stop them by PID): a temporary policy-rc.d keeps the packages' init scripts quiet.
# Needs root; a quick no-op when the binaries are already there.
set -euo pipefail

missing=()
for bin in slurmctld slurmd sbatch squeue scontrol munged; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "slurm: already installed ($(slurmctld -V))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm: missing ${missing[*]} and not root: cannot install (the SLURM tests will skip outside CI)" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "slurm: no apt-get; install slurm-wlm and munge yourself" >&2; exit 1; }

policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
fi
cleanup() { if [ "$added_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "slurm: installed $(slurmctld -V) and munge in $(( $(date +%s) - start )) s"
