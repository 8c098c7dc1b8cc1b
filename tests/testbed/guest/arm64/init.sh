#!/bin/sh
# arm64 guest init, both stages (tests/testbed/arm64.py): the first kernel fills a tmpfs (page
# cache to filter), writes the marker, loads the capture kernel with kexec_load and crashes;
# the capture kernel copies /proc/vmcore to the host and, if the job says so, runs vmcore-save on it.
[ "$$" = 1 ] || { echo "refusing: not PID 1"; exit 1; }

. /lib.sh
setup_base
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu
mount_9p job /job cache=mmap
. /job/job.env

# vmcore-save on /proc/vmcore, chrooted into the arm64 Python root (tests/testbed/arm64_python.py),
# into a dump directory on the job share; its exit status and times go to the console.
save_in_guest() {
    root=/python
    mount_9p python "$root" "ro,cache=loose"
    mount_9p collector "$root/opt/vmcore-collector" "ro,cache=loose"
    for dir in proc sys dev job; do mount --bind "/$dir" "$root/$dir"; done
    mount -t tmpfs tmpfs "$root/tmp"
    echo "testbed: vmcore-save starts at $(cut -d' ' -f1 /proc/uptime) s"
    PYTHONPATH=/opt/vmcore-collector chroot "$root" /usr/bin/python3.11 -m collector /proc/vmcore /job/saved \
        -d "$TESTBED_SAVE_LEVEL"
    echo "testbed: vmcore-save exited $? at $(cut -d' ' -f1 /proc/uptime) s"
    sync
}

if [ -e /proc/vmcore ]; then
    echo "testbed: capture kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
    dd if=/proc/vmcore of=/job/vmcore bs=1M 2>/dev/null || fail "copy /proc/vmcore"
    sync
    [ -n "${TESTBED_SAVE_LEVEL:-}" ] && save_in_guest
    poweroff -f
fi

echo "testbed: first kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
mkdir -p /cache
mount -t tmpfs tmpfs /cache
dd if=/dev/urandom of=/cache/random bs=1M count="$TESTBED_CACHE_MIB" 2>/dev/null || fail "fill tmpfs"
echo "$TESTBED_MARKER" > /dev/kmsg

# Debian's arm64 kernel lacks CONFIG_KALLSYMS_ALL: /proc/kallsyms has no _text, and
# kexec-tools then writes a wrong kernel-text PT_LOAD (a negative /proc/vmcore size). _text is
# _stext less the 64 KiB SEGMENT_ALIGN that .head.text takes; the arithmetic is done on the
# low 32 bits (busybox sh's is signed 64-bit), which the image never crosses.
stext=$(grep ' [Tt] _stext$' /proc/kallsyms | cut -d' ' -f1)
[ -n "$stext" ] || fail "no _stext in /proc/kallsyms"
high=${stext%????????}
low=$((0x${stext#????????} - 0x10000))
[ "$low" -ge 0 ] || fail "_stext $stext: _text crosses a 4 GiB boundary"
{ printf '%s%08x T _text\n' "$high" "$low"; cat /proc/kallsyms; } > /kallsyms
mount --bind /kallsyms /proc/kallsyms

mount_9p assets /assets ro
kexec -p /assets/Image --initrd="$TESTBED_CAPTURE_INITRD" --append="$TESTBED_CAPTURE_APPEND" || fail "kexec -p"
echo "testbed: capture kernel loaded, crashing at $(cut -d' ' -f1 /proc/uptime) s"
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
fail "still running after the sysrq crash"
