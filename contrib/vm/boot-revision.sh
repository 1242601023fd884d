#!/bin/bash
# boot-revision.sh — boot a VM from a strata NBD export (a block volume's
# staging device, a revision, or an --overlay revision).
#
# Usage:
#   boot-revision.sh [options] [EXPORT]
#
#   EXPORT             export name, default vm@latest (`strata nbd serve` names
#                      exports after targets: vm, vm@latest, vm@3, vm@mytag...)
#   --socket PATH      unix socket of `strata nbd serve --listen unix:PATH`
#                      (default $STRATA_NBD_SOCKET)
#   --uri URI          any NBD URI instead, e.g. nbd://127.0.0.1:10809/vm@latest
#   --kernel FILE      boot this kernel directly (with --initrd, --append)
#   --initrd FILE      instead of the disk's own boot loader; see make-test-guest.sh
#   --append ARGS      extra kernel arguments (console=ttyS0 is always set)
#   --accel auto|kvm|tcg   default auto: KVM if /dev/kvm is usable and a probe
#                      boot of the kernel (--kernel, else the host's
#                      /boot/vmlinuz-*) under KVM gets going, TCG otherwise
#                      (also $STRATA_VM_ACCEL). Some nested hypervisors offer
#                      a /dev/kvm that hangs real kernels: with no kernel to
#                      probe, say --accel tcg there.
#   --memory MIB       guest memory (default 1024)
#   --cpus N           guest CPUs (default 1)
#   --writable         let guest writes reach the export (staging, or a
#                      revision served with --overlay); by default they go to a
#                      throwaway qemu snapshot and the export is opened read-only
#   --timeout SECS     kill the VM after SECS seconds (exit status 124)
#   -- QEMU-ARGS...    passed to qemu-system-x86_64 unchanged
#
# The guest's serial console is this script's stdin/stdout; there is no
# graphical display. With --kernel, the guest powers off (or panics) and the
# script returns qemu's exit status.
#
# Examples:
#   strata nbd serve --listen unix:/run/strata-nbd.sock --export vm@latest
#   contrib/vm/boot-revision.sh --socket /run/strata-nbd.sock vm@latest
#   contrib/vm/make-test-guest.sh /tmp/guest
#   contrib/vm/boot-revision.sh --socket /tmp/nbd.sock --accel tcg \
#       --kernel /tmp/guest/vmlinuz --initrd /tmp/guest/initrd.img vm@2
set -euo pipefail

export_name=vm@latest
socket=${STRATA_NBD_SOCKET:-}
uri=
kernel=
initrd=
append=
accel=${STRATA_VM_ACCEL:-auto}
memory=1024
cpus=1
writable=0
timeout_secs=
extra=()

die() {
	echo "boot-revision: $*" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--socket) socket=${2:?--socket needs a path}; shift 2 ;;
	--uri) uri=${2:?--uri needs a URI}; shift 2 ;;
	--kernel) kernel=${2:?--kernel needs a file}; shift 2 ;;
	--initrd) initrd=${2:?--initrd needs a file}; shift 2 ;;
	--append) append=${2?--append needs arguments}; shift 2 ;;
	--accel) accel=${2:?--accel needs auto, kvm or tcg}; shift 2 ;;
	--memory) memory=${2:?--memory needs MiB}; shift 2 ;;
	--cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
	--writable) writable=1; shift ;;
	--timeout) timeout_secs=${2:?--timeout needs seconds}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	--) shift; extra=("$@"); break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) export_name=$1; shift ;;
	esac
done

command -v qemu-system-x86_64 >/dev/null ||
	die "qemu-system-x86_64 not found (apt-get install --no-install-recommends qemu-system-x86)"
if [ -z "$uri" ]; then
	[ -n "$socket" ] || die "say where the NBD server is: --socket PATH or --uri URI"
	[ -S "$socket" ] || die "$socket is not a socket; is \`strata nbd serve --listen unix:$socket\` running?"
	uri="nbd+unix:///${export_name}?socket=${socket}"
fi
if [ -n "$initrd$append" ] && [ -z "$kernel" ]; then
	die "--initrd and --append need --kernel"
fi

# kvm_usable: /dev/kvm can be opened and, when there is a kernel to try, a
# guest under KVM actually starts it. Some nested hypervisors accept KVM but
# hang every real kernel, so a working /dev/kvm alone proves little.
kvm_usable() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	local probe=$kernel log
	if [ -z "$probe" ]; then
		# Booting the disk's own loader: probe with the host's kernel if
		# there is one to read, else trust /dev/kvm.
		for probe in /boot/vmlinuz-*; do [ -r "$probe" ] && break; done
		[ -r "$probe" ] || return 0
	fi
	log=$(mktemp)
	# No root device: a working guest panics (and exits) within a second or
	# two; "Linux version" shows it got as far as the decompressed kernel.
	# The subshell keeps bash's report of a crashing qemu off the terminal.
	(timeout 15 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -display none \
		-serial "file:$log" -no-reboot -kernel "$probe" \
		-append "console=ttyS0 panic=-1 root=/dev/strata-probe-none"; true) >/dev/null 2>&1
	if grep -q "Linux version" "$log"; then
		rm -f "$log"
		return 0
	fi
	rm -f "$log"
	return 1
}

case $accel in
auto)
	if kvm_usable; then accel=kvm; else accel=tcg; fi
	;;
kvm | tcg) ;;
*) die "--accel wants auto, kvm or tcg, not $accel" ;;
esac
echo "boot-revision: booting $uri with $accel" >&2

args=(-accel "$accel" -m "$memory" -smp "$cpus" -nodefaults -display none
	-serial stdio -no-reboot)
if [ "$accel" = kvm ]; then
	args+=(-cpu host)
else
	args+=(-cpu max)
fi
drive="file=${uri},format=raw,if=virtio,cache=writeback"
if [ "$writable" = 0 ]; then
	# Guest writes land in a temporary qcow2 that qemu deletes on exit; the
	# export itself is only read.
	drive+=",snapshot=on"
fi
args+=(-drive "$drive")
if [ -n "$kernel" ]; then
	args+=(-kernel "$kernel" -append "console=ttyS0 panic=-1 ${append}")
	[ -z "$initrd" ] || args+=(-initrd "$initrd")
fi

if [ -n "$timeout_secs" ]; then
	exec timeout "$timeout_secs" qemu-system-x86_64 "${args[@]}" "${extra[@]}"
fi
exec qemu-system-x86_64 "${args[@]}" "${extra[@]}"
