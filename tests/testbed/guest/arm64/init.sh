#!/bin/sh
# arm64 guest init, both stages (tests/testbed/arm64.py): the first kernel fills a tmpfs (page
# cache to filter), writes the marker, loads the capture kernel with kexec_load and crashes;
# the capture kernel copies /proc/vmcore to the host.
[ "$$" = 1 ] || { echo "refusing: not PID 1"; exit 1; }

. /lib.sh
setup_base
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu
mount_9p job /job cache=mmap
. /job/job.env

if [ -e /proc/vmcore ]; then
    echo "testbed: capture kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
    dd if=/proc/vmcore of=/job/vmcore bs=1M 2>/dev/null || fail "copy /proc/vmcore"
    sync
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
kexec -p /assets/Image --initrd=/assets/initramfs.cpio --append="$TESTBED_CAPTURE_APPEND" || fail "kexec -p"
echo "testbed: capture kernel loaded, crashing at $(cut -d' ' -f1 /proc/uptime) s"
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
fail "still running after the sysrq crash"
