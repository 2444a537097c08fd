# shellcheck shell=bash
# Shared machinery of the virtual-machine tests (tools/e2e-vm) and of
# tools/build-ramdisk: Debian packages fetched and unpacked (never
# installed), kernel modules with their dependencies, qemu by software
# emulation on a restricted user-mode network, and a failure report with the
# serial console's tail and the host programs' logs.
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

