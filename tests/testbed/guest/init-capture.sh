#!/bin/sh
# Capture-kernel init: copy /proc/vmcore to the host, or run the host's command in a
# chroot of the host root with /proc/vmcore visible and /out writable.
[ "$$" = 1 ] || { echo "refusing: not PID 1"; exit 1; }

. /lib.sh
setup_base
[ -e /proc/vmcore ] || fail "no /proc/vmcore: not a capture kernel"
# cache=mmap: on 6.12 uncached 9p writes crawl (~20 MB/s vs ~70); on 6.1 it costs nothing
# (~200 MB/s either way). cache=loose is slow on 6.1.
mount_9p job /job cache=mmap
. /job/job.env
echo "testbed: capture kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"

case "$TESTBED_ACTION" in
    kdump)
        # 1 MiB writes: 9p sends each write as its own request.
        dd if=/proc/vmcore of=/job/vmcore bs=1M 2>/dev/null || fail "copy /proc/vmcore"
        ;;
    command)
        ip link set lo up
        ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
        host_chroot /newroot
        mkdir /newroot/out
        mount_9p out /newroot/out cache=mmap
        echo "testbed: running command at $(cut -d' ' -f1 /proc/uptime) s"
        chroot /newroot /usr/bin/env PATH="$TESTBED_PATH" HOME=/root /bin/sh -c "$(cat /job/command)"
        echo $? > /newroot/out/.rc
        ;;
    *)
        fail "unknown action $TESTBED_ACTION"
        ;;
esac
sync
echo "TESTBED-DONE after $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
