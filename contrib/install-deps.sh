#!/usr/bin/env bash
# Installs the system tools strata's tests, demo and benchmarks drive for real
# (FUSE, rsync, NBD clients, qemu tools, gpg, ...) when they are missing.
# Safe to run repeatedly: it only calls apt-get when a command is absent.
# Usage: contrib/install-deps.sh [test|bench|vm]
set -euo pipefail
want=${1:-test}

# command -> Debian package
declare -A pkgs=(
  [rsync]=rsync [fusermount3]=fuse3 [getfattr]=attr [setfacl]=acl
  [nbdinfo]=libnbd-bin [nbdcopy]=libnbd-bin [nbdfuse]=libnbd-bin
  [qemu-img]=qemu-utils [qemu-io]=qemu-utils [qemu-nbd]=qemu-utils
  [nbdkit]=nbdkit [mkfs.ext4]=e2fsprogs [gpg]=gnupg [cmp]=diffutils [fio]=fio
)
if [ "$want" = bench ]; then
  pkgs[restic]=restic; pkgs[borg]=borgbackup; pkgs[/usr/bin/time]=time; pkgs[bc]=bc
fi
if [ "$want" = vm ] || [ "$want" = test ]; then
  pkgs[qemu-system-x86_64]=qemu-system-x86; pkgs[busybox]=busybox-static
fi

missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
# Libraries without a command of their own (the nbd tests drive libnbd's
# Python binding with its client-side checks off).
libs=(python3-libnbd)
[ "$want" = bench ] && libs+=(python3-pyfuse3) # borg mount
for pkg in "${libs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
