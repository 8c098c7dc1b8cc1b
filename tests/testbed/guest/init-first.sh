#!/bin/sh
# First-stage guest init: optional workload, marker into the kernel log, then either load
# the capture kernel and crash, or wait for the host's QMP dump-guest-memory.
[ "$$" = 1 ] || { echo "refusing: not PID 1"; exit 1; }

. /lib.sh
setup_base
mount_9p job /job
. /job/job.env
echo "testbed: first kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"

if [ "$TESTBED_WORKLOAD" = 1 ]; then
    host_chroot /newroot
    mkdir -p /newroot/testbed/disk /newroot/testbed/shm /newroot/testbed/huge
    mount -t ext4 /dev/vda /newroot/testbed/disk || fail "mount workload disk"
    mount -t tmpfs -o size=64m tmpfs /newroot/testbed/shm
    echo 8 > /proc/sys/vm/nr_hugepages
    mount -t hugetlbfs hugetlbfs /newroot/testbed/huge
    mkdir /newroot/job
    mount --bind /job /newroot/job
    echo "testbed: chroot ready after $(cut -d" " -f1 /proc/uptime) s"
    # Stays alive (sleeping) so its anonymous and hugetlb mappings are in the crash.
    # Debian's python3, isolated and without site-packages (-I -S): the workload needs
    # only the standard library, and skipping site saves ~1 s under TCG.
    chroot /newroot /usr/bin/python3 -I -S /job/workload.py /testbed &
    workload_pid=$!
    while [ ! -e /newroot/testbed/shm/READY ]; do
        kill -0 "$workload_pid" 2>/dev/null || fail "workload exited early"
        sleep 0.1
    done
    echo "testbed: workload ready after $(cut -d' ' -f1 /proc/uptime) s"
fi

echo "$TESTBED_MARKER" > /dev/kmsg

case "$TESTBED_ACTION" in
    qmp)
        echo "TESTBED-READY-FOR-DUMP"
        while :; do sleep 3600; done
        ;;
    kdump|command)
        mount_9p assets /assets ro
        kexec_flags="-p"
        [ "$TESTBED_KEXEC" = file ] && kexec_flags="-p -s"
        # -i skips purgatory's checksum of the loaded image: ~1.8 s under TCG.
        kexec $kexec_flags -i "/assets/$TESTBED_CAPTURE_KERNEL" --initrd="/assets/$TESTBED_CAPTURE_INITRD" \
            --append="$TESTBED_CAPTURE_APPEND" || fail "kexec $kexec_flags"
        echo "testbed: capture kernel loaded ($kexec_flags), crashing at $(cut -d' ' -f1 /proc/uptime) s"
        echo 1 > /proc/sys/kernel/sysrq
        echo c > /proc/sysrq-trigger
        ;;
    arm)
        # The product's own arm command (vmcore-collector arm, with the host's kexec-tools)
        # loads the capture kernel: /job/arm-command, run in the host root's chroot.
        if [ ! -d /newroot/job ]; then
            host_chroot /newroot
            mkdir /newroot/job
            mount --bind /job /newroot/job
        fi
        chroot /newroot /usr/bin/env PATH="$TESTBED_PATH" HOME=/root /bin/sh -c "$(cat /job/arm-command)" \
            || fail "arm command"
        echo "testbed: armed, crashing at $(cut -d' ' -f1 /proc/uptime) s"
        echo 1 > /proc/sys/kernel/sysrq
        echo c > /proc/sysrq-trigger
        ;;
esac
fail "unknown action $TESTBED_ACTION"
