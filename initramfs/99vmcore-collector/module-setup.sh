#!/bin/bash
# dracut module: the vmcore-collector capture environment (what Fedora's 99kdumpbase is to kdump).
#
# The image is driven by `vmcore-collector build-initramfs`, which decides what goes in
# (interpreter, the standard-library modules the collector imports, the collector, zstandard,
# paramiko, the configuration and SSH files) and passes it in two variables:
#   VMCORE_COLLECTOR_MANIFEST  lines "tree SRC DST" (copy a staged folder) or "elf SRC DST"
#                              (an executable or shared object: dracut adds what it links)
#   VMCORE_COLLECTOR_KMODS     kernel modules the configured targets need
# No systemd and no udev: our /init (capture-init.sh) mounts devtmpfs, loads the modules and
# runs the collector, so the image needs nothing but busybox and Python.

check() {
    # Only when asked for by name (dracut -m vmcore-collector): never in a normal boot image.
    return 255
}

depends() {
    return 0
}

installkernel() {
    # No -c: a module the kernel has built in, or does not have, is not an error here; the
    # capture kernel says which ones failed to load.
    hostonly='' instmods $VMCORE_COLLECTOR_KMODS
}

install() {
    if [[ ! -r $VMCORE_COLLECTOR_MANIFEST ]]; then
        dfatal "vmcore-collector: no manifest; build this image with 'vmcore-collector build-initramfs'"
        return 1
    fi
    local kind src dst
    while read -r kind src dst; do
        case $kind in
            tree)
                mkdir -p "$initdir/$dst"
                cp -a "$src/." "$initdir/$dst/" || return 1
                ;;
            elf)
                inst_binary "$src" "$dst" || { dfatal "vmcore-collector: cannot install $src"; return 1; }
                ;;
            *)
                dfatal "vmcore-collector: bad manifest line: $kind $src $dst"
                return 1
                ;;
        esac
    done < "$VMCORE_COLLECTOR_MANIFEST"
    inst_simple "$moddir/capture-init.sh" /init
    inst_simple "$moddir/udhcpc-script.sh" /usr/lib/vmcore-collector/udhcpc-script
    chmod 0755 "$initdir/init" "$initdir/usr/lib/vmcore-collector/udhcpc-script"
}
