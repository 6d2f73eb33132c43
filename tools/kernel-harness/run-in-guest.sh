#!/usr/bin/env bash
# Runs one command inside a throwaway QEMU guest booted from Debian's stock kernel, which has the dma-buf drivers
# (vgem, vivid) that a container host usually lacks. The guest sees the host's root read-only over virtio-9p and runs
# the command chrooted into it, so host-built binaries (dotnet, our CLI, test fixtures) run unchanged.
#
# Usage: run-in-guest.sh [--kernel stable|backports] [--modules vgem|vivid|all|none] [--timeout SECONDS] [--verbose]
#                        -- COMMAND ARGS...
#
# --kernel stable (the default) boots the kernel of the host's own Debian release (linux-image-amd64 from the host's apt
# sources; Debian 12: 6.1). --kernel backports boots the one its -backports suite has (Debian 12: 6.12, which also has
# dma-buf heaps and udmabuf), fetched through a private apt list on the host's mirror: the host's sources stay as they
# are.
#
# Prints the command's output and exits with its exit code. Exit 3 when this machine cannot provide the guest
# (no qemu, no kernel package, no way to install them); exit 124 when the command timed out in the guest; exit 125
# when the guest did not report a result (boot failure, crash).
set -euo pipefail

readonly FEATURE_MISSING=3
readonly NO_RESULT=125
modules=vgem
kernel=stable
timeout_s=240
verbose=0

usage() {
  echo "usage: $(basename "$0") [--kernel stable|backports] [--modules vgem|vivid|all|none] [--timeout SECONDS] [--verbose] -- COMMAND ARGS..." >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --modules) [ $# -ge 2 ] || usage; modules=$2; shift 2 ;;
    --modules=*) modules=${1#*=}; shift ;;
    --kernel) [ $# -ge 2 ] || usage; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
    --timeout=*) timeout_s=${1#*=}; shift ;;
    --verbose|-v) verbose=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "error: no command given" >&2; usage; }
case "$modules" in vgem|vivid|all|none) ;; *) echo "error: --modules must be vgem, vivid, all or none (got '$modules')" >&2; exit 2 ;; esac
case "$kernel" in stable|backports) ;; *) echo "error: --kernel must be stable or backports (got '$kernel')" >&2; exit 2 ;; esac
case "$timeout_s" in ''|*[!0-9]*) echo "error: --timeout must be a whole number of seconds" >&2; exit 2 ;; esac

log() { echo "[guest-harness] $*" >&2; }
missing() { echo "error: $*" >&2; exit "$FEATURE_MISSING"; }

cache=${DMABUF_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmabuf-kernel}
mkdir -p "$cache"

# --- host tools -------------------------------------------------------------------------------------------------
apt_updated=0
need_pkg() { # need_pkg COMMAND-OR-FILE PACKAGE
  if [ -e "$1" ] || command -v "$1" >/dev/null 2>&1; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || missing "'$1' is missing and this is not a Debian-like system (install package '$2')"
  [ "$(id -u)" -eq 0 ] || missing "'$1' is missing; install package '$2' (needs root)"
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null 2>&1 || missing "apt-get update failed; cannot install '$2'"
    apt_updated=1
  fi
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 \
    || missing "could not install package '$2' (needed for '$1')"
  [ -e "$1" ] || command -v "$1" >/dev/null 2>&1 || missing "package '$2' is installed but '$1' is still not found"
}
need_pkg qemu-system-x86_64 qemu-system-x86
need_pkg cpio cpio
need_pkg /bin/busybox busybox-static
need_pkg dpkg-deb dpkg
if ldd /bin/busybox >/dev/null 2>&1; then
  # A dynamic busybox (package 'busybox') cannot run in the initramfs; the static one replaces it.
  need_pkg /usr/share/doc/busybox-static busybox-static
  ldd /bin/busybox >/dev/null 2>&1 && missing "/bin/busybox is dynamically linked; install package 'busybox-static'"
fi

# --- kernel -----------------------------------------------------------------------------------------------------
# The meta package linux-image-amd64 depends on the current versioned image package; fetch that one and unpack it
# into the cache (never installed: the host's boot setup is left alone). For backports, where the suite also has the image unsigned
# (backports: the signed build may lag behind), that one is taken: same kernel, no Secure Boot signature to carry.
apt_opts=()
kpattern='^linux-image-[0-9].*-amd64$'
if [ "$kernel" = backports ]; then
  # A private apt list for <release>-backports on the mirror the host already uses for <release>: its own sources
  # file, lists and package cache under the harness's cache folder, so the host's apt state is not touched.
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || missing "cannot tell this machine's Debian release (no VERSION_CODENAME in /etc/os-release)"
  kpattern="^linux-image-[0-9].*+deb[0-9]*-amd64\(-unsigned\)\?$"
  private=$cache/apt-$codename-backports
  mkdir -p "$private/lists/partial" "$private/cache/archives/partial"
  apt_opts=(-o "Dir::Etc::sourcelist=$private/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$private/lists"
            -o "Dir::Cache=$private/cache" -o APT::Get::List-Cleanup=0)
  if command -v apt-cache >/dev/null 2>&1; then
    mirror=$(apt-cache policy 2>/dev/null | awk -v s="$codename/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}')
    if [ -n "$mirror" ]; then
      keyring=/usr/share/keyrings/debian-archive-keyring.gpg
      echo "deb [signed-by=$keyring] $mirror $codename-backports main" > "$private/sources.list.new"
      mv "$private/sources.list.new" "$private/sources.list"
      log "apt-get update ($codename-backports from $mirror, private list)"
      apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || log "warning: apt-get update of $codename-backports failed"
    else
      log "warning: no $codename/main mirror in the host's apt sources; using a kernel unpacked before, if any"
    fi
  fi
fi
kpkg=""
meta_dep() { apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
if command -v apt-cache >/dev/null 2>&1 && { [ "$kernel" = stable ] || [ -s "$private/sources.list" ]; }; then
  kpkg=$(meta_dep)
  if [ -z "$kpkg" ] && [ "$kernel" = stable ] && [ "$apt_updated" -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt_updated=1
    kpkg=$(meta_dep)
  fi
  if [ "$kernel" = backports ] && [ -n "$kpkg" ] && apt-cache "${apt_opts[@]}" show "$kpkg-unsigned" >/dev/null 2>&1; then kpkg=$kpkg-unsigned; fi
fi
if [ -z "$kpkg" ]; then
  # Offline: reuse whatever kernel of this kind was unpacked before.
  kpkg=$(ls -1 "$cache" 2>/dev/null | grep -e "$kpattern" | { if [ "$kernel" = stable ]; then grep -v '+deb'; else cat; fi; } | sort -V | tail -1 || true)
  [ -n "$kpkg" ] || missing "cannot find Debian's linux-image-amd64 package ($kernel; no apt-cache, or not in the package lists)"
fi
kdir=$cache/$kpkg
if [ ! -d "$kdir/boot" ]; then
  log "downloading $kpkg"
  tmp=$(mktemp -d "$cache/dl.XXXXXX")
  chmod 755 "$tmp"
  (cd "$tmp" && apt-get "${apt_opts[@]}" download "$kpkg" >/dev/null 2>&1) || { rm -rf "$tmp"; missing "apt-get download $kpkg failed"; }
  dpkg-deb -x "$tmp"/*.deb "$tmp/root" || { rm -rf "$tmp"; missing "could not unpack $kpkg"; }
  rm -rf "$kdir"
  mv "$tmp/root" "$kdir"
  rm -rf "$tmp"
fi
kver=$(ls -1 "$kdir/lib/modules" | head -1)
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || missing "no kernel image in $kdir/boot"
moddir=$kdir/lib/modules/$kver/kernel

# --- modules: resolve dependencies from each module's own .modinfo (the package ships no modules.dep) -------------
declare -A modpath=()
while IFS= read -r f; do
  b=${f##*/}; b=${b%%.ko*}; modpath[${b//-/_}]=$f
done < <(find "$moddir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

decompress() { # decompress FILE -> stdout
  case "$1" in
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -dc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
  esac
}

declare -A seen=()
order=()
visit() {
  local name=${1//-/_} deps d
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  if [ -z "${modpath[$name]:-}" ]; then
    # Built into the kernel, or absent: the init script reports what is really missing.
    grep -q "/${name}.ko\$\|/${1}.ko\$" "$kdir/lib/modules/$kver/modules.builtin" 2>/dev/null && return 0
    log "warning: module $1 not found in $kpkg"
    return 0
  fi
  deps=$(decompress "${modpath[$name]}" | tr '\0' '\n' | grep -a '^depends=' | head -1 | cut -d= -f2)
  for d in ${deps//,/ }; do visit "$d"; done
  order+=("$name")
}
wanted=(virtio_pci 9pnet_virtio 9p)
case "$modules" in
  vgem) wanted+=(vgem) ;;
  vivid) wanted+=(vivid) ;;
  all) wanted+=(vgem vivid) ;;
esac
for m in "${wanted[@]}"; do visit "$m"; done

# --- initramfs ----------------------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/dmabuf-guest.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,host,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for m in "${order[@]}"; do decompress "${modpath[$m]}" > "$root/lib/modules/$m.ko"; done
printf '%s\n' "${order[@]}" > "$root/modules.list"

# The command, quoted for the guest's shell, and where to run it.
{ printf 'cd %q 2>/dev/null || cd /\n' "$PWD"; printf 'exec'; printf ' %q' "$@"; printf '\n'; } > "$root/command.sh"
{
  printf 'export PATH=%q\n' "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${DOTNET_ROOT:+:$DOTNET_ROOT}"
  printf 'export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8\n'
  printf 'export DOTNET_EnableWriteXorExecute=0 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1\n'
  [ -n "${DOTNET_ROOT:-}" ] && printf 'export DOTNET_ROOT=%q\n' "$DOTNET_ROOT"
  printf 'export DMABUF_GUEST=1\n'
} > "$root/env.sh"
echo "$timeout_s" > "$root/timeout"

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "guest: $(uname -r), $(nproc) cpus"
for m in $(cat /modules.list); do
  insmod "/lib/modules/$m.ko" 2>/tmp.err || echo "guest: insmod $m failed: $(cat /tmp.err)"
done
rm -f /tmp.err
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host; then
  echo "guest: cannot mount the host root over 9p"
  echo "@@DMABUF-GUEST-EXIT 125@@"
  poweroff -f
fi
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null || echo "guest: no debugfs"
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
mount -t tmpfs -o mode=755 tmpfs /host/run 2>/dev/null
cp /env.sh /command.sh /host/tmp/
echo "@@DMABUF-GUEST-BEGIN@@"
timeout -s KILL "$(cat /timeout)" chroot /host /bin/sh -c '. /tmp/env.sh; . /tmp/command.sh' </dev/null 2>&1
rc=$?
# The output may not end in a newline; the host drops this extra empty line again.
printf '\n@@DMABUF-GUEST-END@@\n'
[ "$rc" -eq 137 ] && rc=124
echo "@@DMABUF-GUEST-EXIT $rc@@"
sync
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$work/initramfs.gz"

# --- boot -----------------------------------------------------------------------------------------------------------
# TCG by default: a /dev/kvm inside a container or nested VM often exists but cannot run a guest. .NET needs
# '-cpu max' under TCG (the default model lacks instructions the runtime uses).
accel=(-accel tcg -cpu max)
if [ "${DMABUF_GUEST_ACCEL:-tcg}" = kvm ]; then accel=(-accel kvm -cpu host); fi
console=$work/console.log
log "booting $kpkg ($kver) with modules: ${order[*]}"
start=$(date +%s)
qemu_rc=0
timeout -s KILL $((timeout_s + 120)) qemu-system-x86_64 \
  "${accel[@]}" -m 2G -smp 2 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -nic none </dev/null > "$console" 2>&1 || qemu_rc=$?
end=$(date +%s)
tr -d '\r' < "$console" > "$console.txt"
[ "$verbose" -eq 1 ] && sed 's/^/[console] /' "$console.txt" >&2

if ! grep -q '^@@DMABUF-GUEST-EXIT [0-9]*@@$' "$console.txt"; then
  echo "error: the guest reported no result (qemu exit $qemu_rc after $((end - start)) s); console follows" >&2
  tail -50 "$console.txt" >&2
  exit "$NO_RESULT"
fi
{ grep -o 'guest: .*' "$console.txt" || true; } | sed 's/^/[guest-harness] /' >&2
awk '/^@@DMABUF-GUEST-END@@$/ { if (held) { if (last != "") print last }; exit }
     inside { if (held) print last; last = $0; held = 1 }
     /^@@DMABUF-GUEST-BEGIN@@$/ { inside = 1 }' "$console.txt"
rc=$(sed -n 's/^@@DMABUF-GUEST-EXIT \([0-9]*\)@@$/\1/p' "$console.txt" | tail -1)
log "guest exit $rc after $((end - start)) s"
exit "$rc"
