#!/bin/bash
# make-test-guest.sh OUTDIR — build a tiny guest for booting strata block
# revisions in tests: a Debian cloud kernel (OUTDIR/vmlinuz) and a busybox
# initramfs (OUTDIR/initrd.img) whose init loads virtio_blk, mounts /dev/vda
# (or /dev/vda1) read-only, prints the file named by the kernel argument
# strata.marker=PATH (default /strata-marker) between the lines
# STRATA-MARKER-BEGIN and STRATA-MARKER-END, and powers off.
#
#   contrib/vm/make-test-guest.sh /tmp/guest
#   contrib/vm/boot-revision.sh --kernel /tmp/guest/vmlinuz --initrd /tmp/guest/initrd.img \
#       --socket /tmp/nbd.sock vm@latest
#
# Needs Debian's apt-get (packages linux-image-cloud-amd64, busybox-static are
# downloaded, not installed) and dpkg-deb. About 27 MB download, a few seconds.
set -euo pipefail

out=${1:?usage: make-test-guest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
chmod 755 "$work" # apt-get download drops privileges to _apt when it can

kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "make-test-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
apt-get download -q "$kpkg" busybox-static >/dev/null 2>&1 ||
	apt-get download "$kpkg" busybox-static >&2
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done

mods=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)
mkdir -p initrd/bin initrd/dev initrd/proc initrd/sys initrd/mnt initrd/lib/modules
cp root/bin/busybox initrd/bin/busybox
for m in "${mods[@]}"; do
	f=$(find root/lib/modules -name "$m.ko*" | head -n1)
	[ -n "$f" ] || continue # built into this kernel
	case $f in
	*.xz) xz -dc "$f" >"initrd/lib/modules/$m.ko" ;;
	*.zst) zstd -qdc "$f" >"initrd/lib/modules/$m.ko" ;;
	*) cp "$f" "initrd/lib/modules/$m.ko" ;;
	esac
done

cat >initrd/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${mods[*]}; do
	[ -f /lib/modules/\$m.ko ] && insmod /lib/modules/\$m.ko
done
marker=/strata-marker
for arg in \$(cat /proc/cmdline); do
	case \$arg in strata.marker=*) marker=\${arg#strata.marker=} ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
sleep 0.2 # partitions appear just after the disk
dev=/dev/vda
[ -b /dev/vda1 ] && dev=/dev/vda1
if mount -o ro,noload \$dev /mnt 2>/dev/null || mount -o ro \$dev /mnt; then
	echo STRATA-MARKER-BEGIN
	cat "/mnt\$marker"
	echo STRATA-MARKER-END
	umount /mnt
else
	echo "STRATA-GUEST-ERROR: cannot mount \$dev"
fi
poweroff -f
INIT
chmod 755 initrd/init

(cd initrd && find . | "$work/root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 >"$out/initrd.img"
cp root/boot/vmlinuz-* "$out/vmlinuz"
echo "$out/vmlinuz $out/initrd.img"
