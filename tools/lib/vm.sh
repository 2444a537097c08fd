# shellcheck shell=bash
# Shared machinery of the virtual-machine tests (tools/e2e-vm,
# tools/e2e-kernel, tools/conformance --lio) and of tools/build-ramdisk:
# Debian packages fetched and unpacked (never installed), kernel modules with
# their dependencies, a guest initramfs, qemu by software emulation on a
# restricted user-mode network, a command channel into the guest, and a
# failure report with the serial console's tail and the host programs' logs.
#
# Source it from a script that has cd'ed to the repository's root, after
# setting VM_NAME (the log prefix). Functions are vm_*; globals VM_*.
# Nothing here talks to anything but loopback, qemu's user-mode network and
# Debian's package archive (through apt-get).

VM_NAME=${VM_NAME:-vm}
VM_CACHE=${VM_CACHE:-target/e2e-vm}
VM_WORK=${VM_WORK:-}
VM_QEMU_PID=
# Files the failure report prints: "label|path" entries.
VM_LOGS=()

vm_log() { printf '[%s] %s\n' "$VM_NAME" "$*" >&2; }
vm_now() { date +%s.%N; }
vm_since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# The serial console without carriage returns and terminal escapes.
vm_plain() { sed 's/\r$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g'; }

# vm_report: the serial console's tail, qemu's complaints, then every log in
# VM_LOGS, each with its label.
vm_report() {
    local entry label path
    if [ -n "$VM_WORK" ] && [ -s "$VM_WORK/serial.log" ]; then
        echo "--- serial console (last 60 lines) ---" >&2
        tail -n 60 "$VM_WORK/serial.log" | vm_plain >&2
    fi
    if [ -n "$VM_WORK" ] && [ -s "$VM_WORK/qemu.log" ]; then
        echo "--- qemu ---" >&2
        tail -n 20 "$VM_WORK/qemu.log" >&2
    fi
    # The guest's own view, while it still answers: the kernel's log, and
    # whatever $VM_GUEST_REPORT (a guest command) adds.
    if [ -n "${VM_CONTROL_PORT:-}" ] && [ -n "$VM_QEMU_PID" ] && kill -0 "$VM_QEMU_PID" 2>/dev/null; then
        echo "--- guest: dmesg (last 40 lines) ---" >&2
        vm_guest --timeout 10 "dmesg | tail -n 40; ${VM_GUEST_REPORT:-}" >&2 || true
    fi
    for entry in "${VM_LOGS[@]}"; do
        label=${entry%%|*}
        path=${entry#*|}
        [ -s "$path" ] || continue
        echo "--- $label (last 40 lines) ---" >&2
        tail -n 40 "$path" >&2
    done
    echo "--- end ---" >&2
}

# vm_fail REASON: log it, print the report, exit $VM_FAIL_STATUS (1).
vm_fail() {
    vm_log "FAIL: $*"
    vm_report
    exit "${VM_FAIL_STATUS:-1}"
}

# vm_free_ports N: N distinct loopback ports below the ephemeral range that
# nothing listens on right now, on one line.
vm_free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
ports = []
while len(ports) < int(sys.argv[1]):
    p = random.randrange(20000, 32000)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        ports.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(*ports)
PY
}

# --- Debian packages, fetched once, never installed -----------------------

# vm_kernel: Debian's current kernel package (what linux-image-amd64 depends
# on) unpacked into $VM_CACHE/linux-image-VERSION, downloaded only when that
# version is not there yet. Sets VM_KVER, VM_KDIR (the unpacked package) and
# VM_KERNEL (its vmlinuz).
vm_kernel() {
    local pkg old
    mkdir -p "$VM_CACHE"
    pkg=$(vm_kernel_package)
    if [ -z "$pkg" ]; then
        # No package index: use the kernel fetched last time, if any.
        pkg=$(ls -1d "$VM_CACHE"/linux-image-*/.extracted 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname | xargs -r basename)
        [ -n "$pkg" ] || vm_fail "cannot resolve linux-image-amd64 (apt-get update?) and no kernel is cached in $VM_CACHE"
        vm_log "no package index; using the cached $pkg"
    fi
    if [ -e "$VM_CACHE/$pkg/.extracted" ]; then
        vm_log "kernel ${pkg#linux-image-}: cached in $VM_CACHE/$pkg"
    else
        vm_log "kernel ${pkg#linux-image-}: downloading $pkg (not installed: unpacked into $VM_CACHE/$pkg)"
        if ! vm_fetch_kernel "$pkg"; then
            vm_log "download failed; refreshing the package index once"
            apt-get update -qq
            pkg=$(vm_kernel_package)
            [ -n "$pkg" ] || vm_fail "cannot resolve linux-image-amd64"
            [ -e "$VM_CACHE/$pkg/.extracted" ] || vm_fetch_kernel "$pkg" || vm_fail "cannot download $pkg"
        fi
        # Older kernels fetched before, and their ramdisks, are of no further use.
        for old in "$VM_CACHE"/linux-image-* "$VM_CACHE"/*-ramdisk-*.cpio.gz; do
            [ -e "$old" ] || continue
            case "$old" in "$VM_CACHE/$pkg" | *"-${pkg#linux-image-}.cpio.gz") continue ;; esac
            rm -rf "$old"
        done
    fi
    VM_KVER=${pkg#linux-image-}
    VM_KDIR=$VM_CACHE/$pkg
    VM_KERNEL=$VM_KDIR/boot/vmlinuz-$VM_KVER
    [ -f "$VM_KERNEL" ] || vm_fail "no $VM_KERNEL in the package"
}

# The package linux-image-amd64 depends on now: linux-image-<version>-amd64.
vm_kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Download and unpack kernel package $1 into $VM_CACHE/$1, marked complete
# only at the end; false if any step fails.
vm_fetch_kernel() {
    local pkg=$1 dl=$VM_CACHE/download partial=$VM_CACHE/$1.partial
    rm -rf "$dl" "$partial"
    mkdir -p "$dl" "$partial"
    (cd "$dl" && apt-get -o APT::Sandbox::User=root download -qq "$pkg") || return 1
    dpkg-deb -x "$dl/$pkg"_*.deb "$partial" || return 1
    basename "$dl/$pkg"_*.deb > "$partial/.extracted" || return 1
    mv "$partial" "$VM_CACHE/$pkg" || return 1
    rm -rf "$dl"
}

# vm_debs DEST PACKAGE...: the candidate version of each package, kept in
# $VM_CACHE/debs (downloaded when that version is not there yet), unpacked
# into DEST. Prints "package version" lines to $DEST/.versions.
vm_debs() {
    local dest=$1 debs=$VM_CACHE/debs pkg version arch file missing=()
    shift
    mkdir -p "$debs" "$dest"
    # Each package's candidate, as "package version architecture"; with no
    # package index yet (a fresh machine), after one apt-get update.
    local candidates
    candidates=$(vm_candidates "$@")
    if [ "$(wc -l <<<"$candidates")" != "$#" ]; then
        apt-get update -qq
        candidates=$(vm_candidates "$@")
        [ "$(wc -l <<<"$candidates")" = "$#" ] ||
            vm_fail "apt-cache knows only $(cut -d' ' -f1 <<<"$candidates" | tr '\n' ' ')of: $*"
    fi
    : > "$dest/.versions"
    while read -r pkg version arch; do
        file="$debs/${pkg}_${version//:/%3a}_$arch.deb"
        [ -e "$file" ] || missing+=("$pkg=$version")
        echo "$pkg $version" >> "$dest/.versions"
    done <<<"$candidates"
    if [ "${#missing[@]}" -gt 0 ]; then
        vm_log "downloading ${#missing[@]} Debian packages into $debs (unpacked for the guest, never installed)"
        (cd "$debs" && apt-get -o APT::Sandbox::User=root download -qq "${missing[@]}") ||
            vm_fail "apt-get download ${missing[*]} failed"
    fi
    while read -r pkg version; do
        dpkg-deb -x "$debs/${pkg}_${version//:/%3a}_"*.deb "$dest" || vm_fail "cannot unpack $pkg $version"
    done < "$dest/.versions"
}

vm_candidates() {
    apt-cache show --no-all-versions "$@" 2>/dev/null |
        awk '/^Package: / { p = $2 } /^Version: / { v = $2 } /^Architecture: / { a = $2 }
             /^$/ && p { print p, v, a; p = "" } END { if (p) print p, v, a }'
}

# vm_install_binaries FROM ROOT PATH...: copy each PATH (relative to the
# unpacked packages in FROM) into ROOT at the same place, with the shared
# libraries it needs, found in FROM only (by FROM's own dynamic loader).
vm_install_binaries() {
    local from=$1 root=$2 path lib dir libpath
    shift 2
    local loader=$from/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    [ -x "$loader" ] || vm_fail "no dynamic loader in $from (add libc6 to the packages)"
    libpath=$from/lib/x86_64-linux-gnu:$from/usr/lib/x86_64-linux-gnu
    mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
    cp -L "$loader" "$root/lib/x86_64-linux-gnu/"
    ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
    for path in "$@"; do
        [ -f "$from/$path" ] || vm_fail "no $path in the unpacked packages"
        dir=$(dirname "$path")
        mkdir -p "$root/$dir"
        cp -L "$from/$path" "$root/$path"
        while read -r lib; do
            case "$lib" in
                "not found:"*) vm_fail "$path needs ${lib#not found:}, which no listed package holds" ;;
                "$from"/*) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
                *) vm_fail "$path needs $lib from outside the packages" ;;
            esac
        done < <("$loader" --library-path "$libpath" --list "$from/$path" |
            awk '$2 == "=>" && $3 == "not" { print "not found:" $1; next }
                 $2 == "=>" { print $3 } $1 ~ /^\// { print $1 }' | grep -v "ld-linux-x86-64.so.2$" || true)
    done
}

# --- kernel modules ---------------------------------------------------------

# A module's name as the kernel knows it: the file's base name without .ko
# and any compression suffix, `-` read as `_`.
vm_module_name() {
    local base=${1##*/}
    base=${base%%.ko*}
    echo "${base//-/_}"
}

# vm_resolve_modules MODDIR NAME,...: the modules and their dependencies,
# dependencies first: their names in VM_MODULE_ORDER, their files (under
# MODDIR) in VM_MODULE_FILE. MODDIR is BASE/lib/modules/VERSION; without a
# modules.dep there (an unpacked package), `depmod -n` computes it. Modules
# built into the kernel are logged and skipped.
VM_MODULE_ORDER=()
declare -gA VM_MODULE_FILE=()
vm_resolve_modules() {
    local moddir=$1 names=$2 deps_text kver base
    if [ -s "$moddir/modules.dep" ]; then
        deps_text=$(cat "$moddir/modules.dep")
    else
        command -v depmod >/dev/null 2>&1 ||
            vm_fail "$moddir has no modules.dep and depmod is missing (tools/install-deps --vm, or apt-get install kmod)"
        kver=$(basename "$moddir")
        base=$(cd "$moddir/../../.." && pwd)
        # -n: the index files to stdout, the directory untouched; modules.dep comes first.
        deps_text=$(depmod -n -b "$base" "$kver" | grep -E '^[^#[:space:]]+\.ko(\.[a-z]+)?:' || true)
    fi
    [ -n "$deps_text" ] || vm_fail "no module dependencies found for $moddir"
    local -A deps_of=() seen=()
    local line file name
    while IFS= read -r line; do
        file=${line%%:*}
        name=$(vm_module_name "$file")
        VM_MODULE_FILE[$name]=$file
        deps_of[$name]=${line#*:}
    done <<<"$deps_text"
    # Depth first: a module's dependencies (each with its own) before it.
    _vm_visit() {
        local m=$1 dep
        [ -z "${seen[$m]:-}" ] || return 0
        seen[$m]=1
        for dep in ${deps_of[$m]}; do
            _vm_visit "$(vm_module_name "$dep")"
        done
        VM_MODULE_ORDER+=("$m")
    }
    local builtin=()
    for name in ${names//,/ }; do
        name=${name//-/_}
        if [ -z "${VM_MODULE_FILE[$name]:-}" ]; then
            if grep -qE "(^|/)${name//_/[-_]}\.ko(\.[a-z]+)?$" "$moddir/modules.builtin" 2>/dev/null; then
                builtin+=("$name")
                continue
            fi
            vm_fail "module $name is not in $moddir"
        fi
        _vm_visit "$name"
    done
    [ "${#builtin[@]}" = 0 ] || vm_log "built into the kernel (nothing to load): ${builtin[*]}"
    [ "${#VM_MODULE_ORDER[@]}" = 0 ] || vm_log "modules, in load order: ${VM_MODULE_ORDER[*]}"
}

# vm_copy_modules MODDIR ROOT: the resolved modules, decompressed (busybox
# insmod reads no compressed module), into ROOT/lib/modules, with the order
# to load them in, one file name a line, in ROOT/lib/modules/load-order.
vm_copy_modules() {
    local moddir=$1 root=$2 m src dst
    mkdir -p "$root/lib/modules"
    for m in "${VM_MODULE_ORDER[@]}"; do
        src=$moddir/${VM_MODULE_FILE[$m]}
        dst=$root/lib/modules/$m.ko
        case "$src" in
            *.ko) cp "$src" "$dst" ;;
            *.ko.xz) xz -dc "$src" > "$dst" ;;
            *.ko.zst) zstd -qdc "$src" > "$dst" ;;
            *.ko.gz) gzip -dc "$src" > "$dst" ;;
            *) vm_fail "cannot read module file $src" ;;
        esac
        echo "$m.ko" >> "$root/lib/modules/load-order"
    done
}

# vm_pack ROOT OUT: ROOT as a gzip'ed newc cpio archive (an initramfs).
vm_pack() {
    mkdir -p "$(dirname "$2")"
    (cd "$1" && find . -print0 | sort -z | cpio --null -o -H newc --quiet --owner 0:0 | gzip -6) > "$2.partial"
    mv "$2.partial" "$2"
}

# --- qemu --------------------------------------------------------------------

# vm_qemu KERNEL INITRD CMDLINE NETDEV [QEMU ARG...]: boot in the background
# (TCG, one CPU, no display, no reboot: a reboot or power-off ends qemu),
# the serial console into $VM_WORK/serial.log. NETDEV is the user-mode
# network's option string (restrict=on is added). Sets VM_QEMU_PID.
vm_qemu() {
    local kernel=$1 initrd=$2 cmdline=$3 netdev=$4 mem=${VM_MEMORY:-512}
    shift 4
    qemu-system-x86_64 -machine pc -accel tcg -cpu max -smp 1 -m "$mem" \
        -nodefaults -nographic -no-reboot -monitor none -serial "file:$VM_WORK/serial.log" \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
        -netdev "user,id=net0,restrict=on,$netdev" -device virtio-net-pci,netdev=net0,romfile= \
        "$@" </dev/null >"$VM_WORK/qemu.log" 2>&1 &
    VM_QEMU_PID=$!
}

# vm_qemu_stop: end qemu if it still runs.
vm_qemu_stop() {
    [ -n "$VM_QEMU_PID" ] || return 0
    kill "$VM_QEMU_PID" 2>/dev/null || true
    wait "$VM_QEMU_PID" 2>/dev/null || true
    VM_QEMU_PID=
}

# vm_qemu_wait SECONDS: wait for qemu to exit by itself (the guest powered
# off); false if it has not within SECONDS, or exited with an error.
vm_qemu_wait() {
    local deadline=$((SECONDS + $1)) rc=0
    while kill -0 "$VM_QEMU_PID" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
    wait "$VM_QEMU_PID" || rc=$?
    VM_QEMU_PID=
    return "$rc"
}

# --- the tools guest: Debian's userland, the kernel's iSCSI and LIO ---------

# What the guest that plays a conductor or hosts LIO carries: open-iscsi,
# parted, util-linux, e2fsprogs, coreutils' dd and sha256sum, dash as /bin/sh
# (busybox's sh would run its own dd, mkswap and sha256sum instead of
# Debian's), static busybox for the rest, and the libraries they need.
VM_GUEST_PACKAGES=(busybox-static dash open-iscsi libopeniscsiusr libisns0 parted libparted2
    util-linux libsmartcols1 libmount1 libblkid1 libuuid1 e2fsprogs libext2fs2 libcom-err2 libss2
    coreutils libacl1 libattr1 libgmp10 libc6 libssl3 libkmod2 liblzma5 libzstd1 libsystemd0
    libcap2 libgcrypt20 libgpg-error0 liblz4-1 libselinux1 libpcre2-8-0 libreadline8 libtinfo6
    libdevmapper1.02.1 libudev1)
VM_GUEST_BINARIES=(bin/dash sbin/iscsiadm sbin/iscsid sbin/parted sbin/mkswap sbin/mkfs sbin/mkfs.ext4
    sbin/mke2fs sbin/blkid bin/dd usr/bin/sha256sum)
VM_GUEST_MODULES=virtio_pci,virtio_blk,virtio_net,crc32c_generic,crc32c_intel,iscsi_tcp,sd_mod,configfs,target_core_iblock,target_core_file,iscsi_target_mod
# The guest's address on qemu's user-mode network, and its command port.
VM_GUEST_ADDR=10.0.2.15
VM_GUEST_CONTROL=5555

# vm_guest_initramfs: the tools guest's initramfs for kernel $VM_KVER (from
# vm_kernel), built once per kernel, package versions and this file into
# $VM_CACHE; sets VM_INITRD and VM_GUEST_VERSIONS (a file of "package
# version" lines).
vm_guest_initramfs() {
    local stage=$VM_CACHE/guest-packages key root
    rm -rf "$stage"
    vm_debs "$stage" "${VM_GUEST_PACKAGES[@]}"
    key=$( { echo "$VM_KVER $VM_GUEST_MODULES ${VM_GUEST_BINARIES[*]}"; cat "$stage/.versions" "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
    VM_INITRD=$VM_CACHE/guest-ramdisk-$key-$VM_KVER.cpio.gz
    VM_GUEST_VERSIONS=$VM_CACHE/guest-packages-$key.txt
    if [ -s "$VM_INITRD" ] && [ -s "$VM_GUEST_VERSIONS" ]; then
        vm_log "guest initramfs: cached in $VM_INITRD"
        rm -rf "$stage"
        return 0
    fi
    rm -f "$VM_CACHE"/guest-ramdisk-*.cpio.gz "$VM_CACHE"/guest-packages-*.txt
    root=$(mktemp -d "${TMPDIR:-/tmp}/vm-guest.XXXXXX")
    vm_install_binaries "$stage" "$root" "${VM_GUEST_BINARIES[@]}"
    mkdir -p "$root"/{bb,bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc/iscsi,var/lock,var/lib/iscsi}
    cp -a "$stage/etc/iscsi/iscsid.conf" "$root/etc/iscsi/"
    cp -a "$stage/etc/mke2fs.conf" "$root/etc/"
    # iscsid answers only root, whom it looks up by name.
    echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
    echo "root:x:0:" > "$root/etc/group"
    install -m 755 "$stage/bin/busybox" "$root/bb/busybox"
    for applet in $("$stage/bin/busybox" --list); do
        [ -e "$root/bb/$applet" ] || ln -s busybox "$root/bb/$applet"
    done
    ln -sf dash "$root/bin/sh"
    vm_resolve_modules "$VM_KDIR/lib/modules/$VM_KVER" "$VM_GUEST_MODULES"
    vm_copy_modules "$VM_KDIR/lib/modules/$VM_KVER" "$root"
    cat > "$root/init" <<'INIT'
#!/bin/sh
# The tools guest's first process: modules, file systems, the network, then
# a command server for the host on port 5555 (one script a connection).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/bb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock/iscsi /dev/pts && mount -t devpts devpts /dev/pts
while read -r m; do
    insmod "/lib/modules/$m" || echo "vm-guest: cannot load $m"
done < /lib/modules/load-order
mount -t configfs configfs /sys/kernel/config
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "InitiatorName=iqn.2005-03.org.open-iscsi:vm-guest" > /etc/iscsi/initiatorname.iscsi
nc -ll -p 5555 -e /bb/vm-command &
echo "vm-guest: ready"
while :; do sleep 3600; done
INIT
    cat > "$root/bb/vm-command" <<'CMD'
#!/bin/sh
# One command from the host: its length in bytes on a line, then the
# script; answers with the script's output and "vm-guest: exit STATUS".
read -r n
f=/tmp/command.$$
head -c "$n" > "$f"
sh "$f" 2>&1 </dev/null
echo "vm-guest: exit $?"
rm -f "$f"
CMD
    cat > "$root/bb/disk-by-serial" <<'SERIAL'
#!/bin/sh
# The /dev node of the virtio disk whose serial is $1.
for d in /sys/block/vd*; do
    [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; exit 0; }
done
echo "no virtio disk with serial $1" >&2
exit 1
SERIAL
    cat > "$root/bb/lio-export" <<'LIO'
#!/bin/sh
# Export block devices with LIO through configfs (no targetcli):
#   lio-export IQN [--chap USER SECRET [--mutual USER SECRET]] DEVICE...
# DEVICE i becomes LUN i (from 0) of IQN's portal group 1 on 0.0.0.0:3260,
# open to any initiator (demo mode, writable); with --chap, logins need
# CHAP (and the target proves itself back with --mutual).
set -e
iqn=$1
shift
chap_user= chap_secret= mutual_user= mutual_secret=
if [ "$1" = --chap ]; then chap_user=$2; chap_secret=$3; shift 3; fi
if [ "$1" = --mutual ]; then mutual_user=$2; mutual_secret=$3; shift 3; fi
t=/sys/kernel/config/target
tpg=$t/iscsi/$iqn/tpgt_1
# Persistent reservations keep their APTPL state here, in a file named for
# the unit serial number.
mkdir -p "$tpg" /var/target/pr
lun=0
for dev in "$@"; do
    name=$(echo "$iqn-$lun" | tr -c 'a-zA-Z0-9_\n' _)
    store=$t/core/iblock_0/$name
    mkdir -p "$store"
    echo "udev_path=$dev" > "$store/control"
    echo 1 > "$store/enable"
    echo "$name" > "$store/wwn/vpd_unit_serial"
    # UNMAP and WRITE SAME with UNMAP where the disk can discard (qemu's
    # discard=unmap), as targetcli leaves to the administrator.
    if [ "$(cat "/sys/block/${dev#/dev/}/queue/discard_max_bytes")" != 0 ]; then
        echo 1 > "$store/attrib/emulate_tpu"
        echo 1 > "$store/attrib/emulate_tpws"
    fi
    mkdir "$tpg/lun/lun_$lun"
    ln -s "$store" "$tpg/lun/lun_$lun/$name"
    lun=$((lun + 1))
done
mkdir -p "$tpg/np/0.0.0.0:3260"
echo 1 > "$tpg/attrib/generate_node_acls"
echo 1 > "$tpg/attrib/cache_dynamic_acls"
echo 0 > "$tpg/attrib/demo_mode_write_protect"
if [ -n "$chap_user" ]; then
    # Without a newline: LIO keeps what is written, byte for byte.
    printf %s "$chap_user" > "$tpg/auth/userid"
    printf %s "$chap_secret" > "$tpg/auth/password"
    if [ -n "$mutual_user" ]; then
        printf %s "$mutual_user" > "$tpg/auth/userid_mutual"
        printf %s "$mutual_secret" > "$tpg/auth/password_mutual"
    fi
    echo 1 > "$tpg/attrib/authentication"
else
    echo 0 > "$tpg/attrib/authentication"
fi
echo 1 > "$tpg/enable"
echo "lio-export: $iqn on 0.0.0.0:3260, LUNs 0-$((lun - 1)): $*${chap_user:+ (CHAP${mutual_user:+, mutual})}"
LIO
    chmod 755 "$root/init" "$root/bb/vm-command" "$root/bb/disk-by-serial" "$root/bb/lio-export"
    vm_pack "$root" "$VM_INITRD"
    rm -rf "$root"
    cp "$stage/.versions" "$VM_GUEST_VERSIONS"
    rm -rf "$stage"
    vm_log "guest initramfs: $VM_INITRD ($(du -h "$VM_INITRD" | cut -f1))"
}

# vm_guest_boot CONTROL_PORT NETDEV [QEMU ARG...]: boot the tools guest
# (vm_kernel and vm_guest_initramfs first) with its command port forwarded
# from 127.0.0.1:CONTROL_PORT and NETDEV's own forwards; wait until it is
# ready (at most 180 s).
vm_guest_boot() {
    local port=$1 netdev=$2 deadline
    shift 2
    VM_CONTROL_PORT=$port
    VM_LOGS+=("guest commands|$VM_WORK/guest.log")
    vm_qemu "$VM_KERNEL" "$VM_INITRD" "console=ttyS0 panic=-1 quiet" \
        "hostfwd=tcp:127.0.0.1:$port-:$VM_GUEST_CONTROL,$netdev" "$@"
    deadline=$((SECONDS + 180))
    until grep -q "vm-guest: ready" "$VM_WORK/serial.log" 2>/dev/null; do
        kill -0 "$VM_QEMU_PID" 2>/dev/null || vm_fail "qemu exited while the guest booted"
        [ "$SECONDS" -lt "$deadline" ] || vm_fail "the guest was not ready within 180 s"
        sleep 0.2
    done
}

# vm_guest [--timeout SECONDS] SCRIPT: run SCRIPT with the guest's sh, its
# output on stdout and in $VM_WORK/guest.log; returns its exit status (255
# when the answer was cut off or did not come in time, default 300 s).
vm_guest() {
    local timeout=300
    if [ "$1" = --timeout ]; then timeout=$2; shift 2; fi
    printf '### %s\n' "$1" >> "$VM_WORK/guest.log"
    python3 - "$VM_CONTROL_PORT" "$timeout" "$1" "$VM_WORK/guest.log" <<'PY'
import socket, sys, time
port, timeout, script, logname = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
deadline = time.monotonic() + timeout
log = open(logname, "ab")
status = 255
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"%d\n" % len(script) + script)
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        s.settimeout(left)
        chunk = s.recv(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            log.write(line + b"\n")
            if line.startswith(b"vm-guest: exit "):
                # The end, even while a background job still holds the socket.
                status = int(line.split()[-1])
                pending = None
                break
            else:
                sys.stdout.buffer.write(line + b"\n")
        sys.stdout.flush()
        if pending is None:
            break
except (OSError, TimeoutError) as e:
    log.write(f"vm-guest: {e}\n".encode())
    print(f"vm-guest: {e}", file=sys.stderr)
sys.exit(status)
PY
}
