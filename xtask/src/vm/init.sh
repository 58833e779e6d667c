#!/bin/sh
# PID 1 of the vm-test guest: mount what secops and the scenarios need, run the scenarios,
# power off. A failed mount is printed and the run goes on: the runner's `mounts` scenario
# judges the mounts, and the host fails a run whose results never end.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
SECOPS_VM_GUEST=1 /bin/secops-vm-runner
echo "secops-vm-runner exited with status $?"
# -f: there is no init system to ask; without it PID 1 would exit and the kernel panic.
poweroff -f
