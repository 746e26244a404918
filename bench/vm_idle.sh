#!/usr/bin/env bash
# vm_idle.sh - benchmark (a) of DESIGN §14, N idle WebSocket connections held
# by one corral-gateway process, inside a small virtual machine whose own
# kernel lets the processes raise their open-file limit.
#
#   bench/vm_idle.sh [N]       default 50000; about 2 minutes under software
#                              emulation on a quiet host (100 000 is past
#                              what an emulated guest keeps up with: its
#                              handshakes and pings time out)
#
# Why a VM: one process needs N + a few descriptors, and where the host's
# hard RLIMIT_NOFILE is below that and raising it is refused (this
# project's build sandbox: 20 000, no CAP_SYS_RESOURCE), bench/fanout.sh
# idle N cannot run.  A guest kernel has its own limits.  The guest is the
# Debian 12 kernel (linux-image-amd64, unpacked, not installed) booted by
# qemu with an initramfs holding busybox-static, the Release binaries from
# build/bench and the shared libraries they load; nothing else.  It runs
# under KVM when /dev/kvm works, else under TCG (software emulation: the
# same kernel and binaries, slower, so accept rates are not comparable with
# the host's; memory per connection is).
#
# Inside, the init script does what bench/fanout.sh idle does: corral-store
# and corral-session on ipc://, a key, corral-gateway on 127.0.0.1:8080 with
# the admission limits lifted, then corral-ws-idle opens N connections from
# four loopback source addresses, holds them 35 s (every one answers one
# ping) and prints the gateway's RSS per connection.
#
#   BUILD=build/bench          build tree (Release)
#   VM_CACHE=build/vm          downloaded packages and the unpacked kernel
#   VM_MEM=6G VM_CPUS=2        guest size
#   VM_ACCEL=tcg|kvm           force an accelerator (default: kvm if it boots)
# Results go to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-50000}
build=${BUILD:-build/bench}
cache=${VM_CACHE:-build/vm}
mem=${VM_MEM:-6G}
cpus=${VM_CPUS:-2}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
if ((${#need[@]})); then
    echo "== apt-get install ${need[*]}"
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== build ($build, Release)"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build/bench-cmake.log" 2>&1 ||
    { cat "$build/bench-cmake.log"; exit 1; }
bins=(corral-store corral-session corral-keys corral-gateway corral-ws-idle)
cmake --build "$build" -j"$(nproc)" --target "${bins[@]}" >"$build/bench-build.log" 2>&1 ||
    { tail -40 "$build/bench-build.log"; exit 1; }

# The kernel and busybox: Debian packages, downloaded once and unpacked.
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
if [[ ! -f $cache/vmlinuz || ! -x $cache/busybox ]]; then
    echo "== download the Debian kernel and busybox-static (into $cache)"
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $kpkg ]] || { echo "cannot find the kernel package behind linux-image-amd64"; exit 1; }
    (cd "$cache" && rm -rf pkg && mkdir pkg && cd pkg &&
        apt-get download "$kpkg" busybox-static >/dev/null 2>&1 &&
        for d in *.deb; do dpkg-deb -x "$d" root; done)
    cp "$cache"/pkg/root/boot/vmlinuz-* "$cache/vmlinuz"
    cp "$cache/pkg/root/bin/busybox" "$cache/busybox"
    rm -rf "$cache/pkg"
fi

echo "== initramfs"
ir=$cache/initramfs
rm -rf "$ir"
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,corral}
cp "$cache/busybox" "$ir/bin/busybox"
paths=()
for b in "${bins[@]}"; do
    p=$(find "$build" -type f -name "$b" -perm -u+x | head -1)
    [[ -n $p ]] || { echo "$b not built"; exit 1; }
    cp "$p" "$ir/corral/$b"
    paths+=("$p")
done
# libwebsockets loads its event-library plugin with dlopen: ldd misses it.
for plugin in /usr/lib/x86_64-linux-gnu/libwebsockets-evlib_*.so; do
    [[ -e $plugin ]] && paths+=("$plugin")
done
for p in "${paths[@]}"; do
    ldd "$p" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'
done | sort -u | while read -r lib; do
    mkdir -p "$ir$(dirname "$lib")"
    cp -L "$lib" "$ir$lib"
done
for plugin in /usr/lib/x86_64-linux-gnu/libwebsockets-evlib_*.so; do
    [[ -e $plugin ]] || continue
    mkdir -p "$ir$(dirname "$plugin")"
    cp -L "$plugin" "$ir$plugin"
done
# The dynamic loader at the path the binaries name.
mkdir -p "$ir/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$ir/lib64/"

cat >"$ir/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
ulimit -n 200000
echo "guest: \$(uname -r), \$(nproc) cpus, \$(awk '/MemTotal/ {printf "%.1f GiB", \$2/1048576}' /proc/meminfo), nofile \$(ulimit -n)"
d=/tmp/c
mkdir -p \$d/store \$d/session \$d/ws
C=/corral
\$C/corral-store --data-dir \$d/store --store-endpoint ipc://\$d/store.sock --store-map-size 1G \\
    --log-level warn 2>\$d/store.log &
\$C/corral-session --data-dir \$d/session --workspace-roots \$d/ws \\
    --store-endpoint ipc://\$d/store.sock --session-endpoint ipc://\$d/client.sock \\
    --worker-endpoint ipc://\$d/worker.sock --events-endpoint ipc://\$d/events.sock \\
    --log-level warn 2>\$d/session.log &
sleep 2
key=\$(\$C/corral-keys create --tenant bench --name vm-idle --store-endpoint ipc://\$d/store.sock \\
    2>/dev/null | awk '/^key:/ {print \$2}')
\$C/corral-gateway --listen 127.0.0.1:8080 --store-endpoint ipc://\$d/store.sock \\
    --session-endpoint ipc://\$d/client.sock --events-endpoint ipc://\$d/events.sock \\
    --rate 1000000 --burst 1000000 --max-connections-per-ip 1000000 --idle-timeout 0 \\
    --log-level warn 2>\$d/gateway.log &
gw=\$!
sleep 3
echo "-- corral-gateway (pid \$gw), $n connections, held 35 s"
\$C/corral-ws-idle --url ws://127.0.0.1:8080/acp -n $n --pid \$gw --hold 35 --key "\$key" 2>&1
echo "-- gateway log (warnings and errors)"
tail -5 \$d/gateway.log
echo "vm_idle: done"
poweroff -f
EOF
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$cache/initramfs.cpio.gz")
echo "initramfs: $(du -h "$cache/initramfs.cpio.gz" | cut -f1)"

accel=${VM_ACCEL:-}
if [[ -z $accel ]]; then
    accel=tcg
    # KVM only when it really boots: a nested /dev/kvm can exist and hang.
    if [[ -w /dev/kvm ]] && timeout 20 qemu-system-x86_64 -enable-kvm -cpu host -m 256M \
        -nodefaults -display none -serial stdio -kernel "$cache/vmlinuz" \
        -append "console=ttyS0 panic=-1 quiet init=/nonexistent" -no-reboot 2>/dev/null |
        grep -q 'Kernel panic'; then
        accel=kvm
    fi
fi
echo "== boot (qemu, $accel, $cpus cpus, $mem)"
args=(-smp "$cpus" -m "$mem" -nodefaults -display none -serial stdio -no-reboot
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz"
    -append "console=ttyS0 panic=-1 quiet")
if [[ $accel == kvm ]]; then args+=(-enable-kvm -cpu host); else args+=(-accel tcg,thread=multi -cpu max); fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout 1800 qemu-system-x86_64 "${args[@]}" | tee "$out" | grep --line-buffered -v '^\[ *[0-9.]*\]'
grep -q '^vm_idle: done' "$out" || { echo "the guest did not finish"; exit 1; }
