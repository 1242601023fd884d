#!/usr/bin/env bash
# strata demo: the whole story on a fresh machine, in a temporary directory.
#   1. init a repository (4+2 erasure coding), list keys, export an escrow copy
#   2. fs volume: rsync a real tree into the staging mount, commit, change a
#      few files, commit again, mount both revisions, show they differ exactly
#      where expected; list and diff
#   3. block volume: write an ext4 image through NBD, commit, loop-mount the
#      revision's disk.img and list its files
#   4. prune --dry-run over revisions committed with --time across weeks
#   5. lose two shard dirs, scrub --repair, everything still reads back
# Run as root (FUSE, loop mounts). Uses bin/strata (make build).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA_BIN:-$here/bin/strata}
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
export STRATA_REPO=$work/repo STRATA_PASSPHRASE=demo-passphrase
mnt=$work/mnt
cleanup() {
  set +e
  for m in "$mnt"/*; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  mountpoint -q "$work/guest" 2>/dev/null && umount -l "$work/guest"
  "$strata" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
mkdir -p "$mnt"/{staging,r1,r2,disk,all} "$work/guest"

step "1. a repository: 4 data + 2 parity shards, passphrase-wrapped master key"
run "$strata" init
run "$strata" key list
STRATA_ESCROW_PASSPHRASE=escrow run "$strata" key export --escrow "$work/escrow.asc"
head -1 "$work/escrow.asc"

step "2. back up a file tree with rsync into the staging mount"
src=$work/src
mkdir -p "$src"
cp -a "$(go env GOROOT)/src/net" "$(go env GOROOT)/src/crypto" "$src/"
echo "first version" > "$src/notes.txt"
run "$strata" volume create home
run "$strata" mount home "$mnt/staging"
run rsync -aHAX --delete "$src/" "$mnt/staging/"
run "$strata" commit home --tag first -m "initial backup"
step "change three files and back up again (rsync sends only what changed)"
echo "second version" > "$src/notes.txt"
rm "$src/net/http/server.go"
echo "new" > "$src/crypto/NEW"
run rsync -aHAX --delete --stats "$src/" "$mnt/staging/" | grep -E 'transferred|Number of files:'
run "$strata" commit home --tag second
run "$strata" umount "$mnt/staging"
run "$strata" list home
run "$strata" diff home@first home@second
step "mount both revisions read-only and compare"
run "$strata" mount home@first "$mnt/r1"
run "$strata" mount home@second "$mnt/r2"
diff -r "$mnt/r1" "$mnt/r2" || true
run rsync -naHAX --checksum --itemize-changes --delete "$src/" "$mnt/r2/"
echo "(no lines above: revision 2 matches the source exactly)"
cat "$mnt/r1/notes.txt" "$mnt/r2/notes.txt"
run "$strata" umount "$mnt/r1"
run "$strata" umount "$mnt/r2"

step "3. back up a disk image through NBD"
mkdir -p "$work/imgsrc"
cp -a "$src/crypto" "$work/imgsrc/"
echo "hello from the guest disk" > "$work/imgsrc/MARKER"
truncate -s 256M "$work/disk.img"
mkfs.ext4 -q -F -d "$work/imgsrc" "$work/disk.img"
run "$strata" volume create vm --block 256M
sock=$work/nbd.sock
run "$strata" nbd serve --listen "unix:$sock"
run nbdcopy "$work/disk.img" "nbd+unix:///vm?socket=$sock"
run "$strata" commit vm --tag installed
run nbdinfo --map "nbd+unix:///vm@latest?socket=$sock" | head -5
run nbdcopy "nbd+unix:///vm@installed?socket=$sock" "$work/back.img"
run cmp "$work/disk.img" "$work/back.img" && echo "    the revision reads back byte-identical"
run "$strata" nbd stop --listen "unix:$sock"
run "$strata" mount vm@latest "$mnt/disk"
run mount -o loop,ro "$mnt/disk/disk.img" "$work/guest"
run cat "$work/guest/MARKER"
umount "$work/guest"
run "$strata" umount "$mnt/disk"

step "4. retention: 40 daily revisions, then prune --dry-run"
for i in $(seq 40 -1 1); do
  "$strata" commit home --time "$(date -u -d "-$i days" +%Y-%m-%dT03:00:00Z)" >/dev/null 2>&1
  printf .
done
echo
run "$strata" prune home --dry-run --keep-daily 7 --keep-weekly 4 --keep-tag first

step "5. lose two of six shard dirs; everything still reads; scrub --repair restores"
rm -rf "$STRATA_REPO/shards/1" "$STRATA_REPO/shards/4"
run "$strata" mount home@second "$mnt/r2"
run rsync -naHAX --checksum --itemize-changes --delete "$src/" "$mnt/r2/"
run "$strata" umount "$mnt/r2"
run "$strata" scrub --repair
run "$strata" scrub
run "$strata" status
echo
echo "demo finished: everything above ran against $STRATA_REPO (removed on exit)"
