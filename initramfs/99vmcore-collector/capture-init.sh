#!/usr/bin/busybox sh
# /init of the capture initramfs: mount the kernel file systems, load the target's modules,
# and run the collector, which saves the dump and then runs final_action or failure_action.
# Never on a running system: only as PID 1 of a capture kernel.
[ "$$" = 1 ] || { echo "vmcore-collector: refusing: this is the capture kernel's /init, not PID 1" >&2; exit 1; }

/usr/bin/busybox --install -s /usr/bin
export PATH=/usr/bin:/usr/sbin PYTHONPATH=/usr/lib/vmcore-collector HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/crash /root
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "vmcore-collector: capture kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
while read -r module; do
    modprobe "$module" 2>/dev/null || echo "vmcore-collector: module $module not loaded (built in or missing)"
done < /etc/vmcore-collector/modules

# -S: no site module (saves about a second under emulation; everything is on PYTHONPATH).
/usr/bin/python3 -S -m collector.capture
status=$?
# The collector ran final_action/failure_action itself unless it asked for a shell (75) or
# could not run at all: then the shell is the only thing left that can help.
if [ "$status" != 75 ]; then
    echo "vmcore-collector: the collector ended with status $status; falling back to $(cat /etc/vmcore-collector/failure-action)"
    case "$(cat /etc/vmcore-collector/failure-action)" in
        shell) ;;
        halt) sync; halt -f ;;
        poweroff) sync; poweroff -f ;;
        *) sync; reboot -f ;;
    esac
fi
echo "vmcore-collector: emergency shell; 'vmcore-save' does the configured job, 'reboot -f' leaves"
setsid cttyhack sh -l
sync
reboot -f
