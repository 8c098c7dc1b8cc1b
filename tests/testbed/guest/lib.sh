# Shell functions both guest stages source (busybox sh). Never run on the host:
# the init scripts that source this refuse to run unless they are PID 1.

fail() {
    echo "TESTBED-FAIL: $*"
    sync
    poweroff -f
}

setup_base() {
    /bin/busybox --install -s /bin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    while read -r module; do
        insmod "/lib/modules/$module" || fail "insmod $module"
    done < /lib/modules/load.order
}

# mount_9p TAG DIR [EXTRA_OPTIONS]: a host folder QEMU shares over virtio-9p.
# msize=512000 with 1 MiB writes copies ~300 MB/s; the 8 KiB default is ten times slower.
mount_9p() {
    mkdir -p "$2"
    mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000${3:+,$3}" "$1" "$2" || fail "mount 9p $1"
}

# host_chroot ROOT: a writable tmpfs root whose top-level folders are bind mounts of the
# host's root (shared read-only as tag hostroot), so host python3 and the repo run there;
# /proc, /sys, /dev, /tmp and /run are the guest's own.
host_chroot() {
    root=$1
    # cache=loose: the host's files do not change during a run, so the guest may cache them.
    mount_9p hostroot /host "ro,cache=loose"
    mkdir -p "$root"
    mount -t tmpfs -o mode=755 tmpfs "$root"
    for entry in /host/*; do
        name=${entry#/host/}
        case $name in proc|sys|dev|run|tmp) mkdir "$root/$name"; continue ;; esac
        if [ -L "$entry" ]; then
            ln -s "$(readlink "$entry")" "$root/$name"
        elif [ -d "$entry" ]; then
            mkdir "$root/$name"
            mount --bind "$entry" "$root/$name"
        fi
    done
    mount --bind /proc "$root/proc"
    mount --bind /sys "$root/sys"
    mount --bind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    mount -t tmpfs tmpfs "$root/run"
    # Host paths that must be visible even below the guest's own /tmp (the repo's clone).
    for path in $TESTBED_HOST_PATHS; do
        mkdir -p "$root$path"
        mount --bind "/host$path" "$root$path"
    done
}
