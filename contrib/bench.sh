#!/usr/bin/env bash
# strata benchmarks, side by side in one run (ratios matter, not absolute
# times: the machine is shared and noisy). Prints a markdown table.
#
#   file trees: rsync into a plain directory vs strata staging + commit vs
#     restic backup vs borg create; the no-change second pass of each; cold
#     read-back (tar | cat) from the plain dir, a strata revision mount,
#     restic mount and borg mount; peak RSS of each tool.
#   block: nbdcopy of a mixed image into strata staging + commit vs into
#     qemu-nbd serving a raw file; out of a revision vs out of qemu-nbd;
#     random 4 KiB reads at queue depth 32 (fio, IOPS); 1,000 scattered 4 KiB writes
#     then commit (bytes added, commit time).
#
# Env: BENCH_RUNS (rounds of the no-change pass and the cold read, default
# 3; the table shows medians), BENCH_CORPUS (dirs, default GOROOT + /usr/share), BENCH_IMAGE_SIZE
# (default 4G), BENCH_SKIP_PEERS=1 to skip restic/borg, BENCH_ONLY=fs|block,
# BENCH_HALTPOLL=NS to run with guest halt polling (KVM guests with the
# haltpoll cpuidle driver; restored on exit). Every FUSE request is a
# round trip between two processes; on a guest whose idle vCPUs halt at
# once (guest_halt_poll_ns 0), each wakeup of the other vCPU costs a VM
# exit, which dominates small-file backups through any FUSE filesystem.
# Run as root: make bench
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA_BIN:-$here/bin/strata}
work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
corpus=${BENCH_CORPUS:-"$(go env GOROOT) /usr/share"}
imgsize=${BENCH_IMAGE_SIZE:-4G}
export STRATA_REPO=$work/repo STRATA_PASSPHRASE=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export RESTIC_REPOSITORY=$work/restic BORG_REPO=$work/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
haltpoll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
oldpoll=
if [ -n "${BENCH_HALTPOLL:-}" ]; then
  [ -w "$haltpoll" ] || { echo "BENCH_HALTPOLL: $haltpoll not writable (not a KVM guest with cpuidle-haltpoll?)" >&2; exit 2; }
  oldpoll=$(cat "$haltpoll"); echo "$BENCH_HALTPOLL" > "$haltpoll"
fi
cleanup() {
  set +e
  [ -n "$oldpoll" ] && echo "$oldpoll" > "$haltpoll"
  for m in $(awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r); do umount -l "$m"; done
  "$strata" stop >/dev/null 2>&1
  [ -n "${qpid:-}" ] && kill "$qpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
rows=()
details=()
runs=${BENCH_RUNS:-3}
row() { rows+=("| $* |"); printf '| %s |\n' "$*" >&2; }
# t CMD...: run and print elapsed seconds (to 0.01) on stdout.
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; return 1; }; e=$(date +%s.%N); printf '%.2f\n' "$(echo "$e - $s" | bc)"; }
# rss CMD...: peak RSS in MiB of CMD (GNU time).
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.0f", $1/1024}'; }
ratio() { case "$1$2" in *-*|*n/a*) echo -;; *) printf '%.2f\n' "$(echo "scale=4; $1 / $2" | bc)";; esac; }
# median V...: the middle value ("-" for none).
median() { [ $# -eq 0 ] && { echo -; return; }; printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# detail LABEL ARRAY...: every run of a repeated row, for the notes below the table.
detail() { local l=$1 a r out=; shift; for a in "$@"; do r="$a[*]"; out+=" | ${!r:--}"; done; details+=("| $l$out |"); }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# server_pid: the repository server's pid, if one runs.
server_pid() { pgrep -f -- "--repo $STRATA_REPO .*serve" | head -1; }
server_rss() { local pid; pid=$(server_pid); awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo "?"; }

src=$work/src
mkdir -p "$src" "$work/plain" "$work/mnt/stage" "$work/mnt/rev" "$work/mnt/restic" "$work/mnt/borg"
for d in $corpus; do cp -a "$d" "$src/"; done
files=$(find "$src" | wc -l); bytes=$(du -sb "$src" | cut -f1)
echo "corpus: $files entries, $((bytes/1024/1024)) MiB; guest_halt_poll_ns: $(cat "$haltpoll" 2>/dev/null || echo n/a)" >&2
"$strata" init >/dev/null

if [ "${BENCH_ONLY:-fs}" = fs ] || [ -z "${BENCH_ONLY:-}" ]; then
  row "what | plain | strata | restic | borg | strata/plain | strata/restic"
  row "--- | --- | --- | --- | --- | --- | ---"
  # First backup.
  cold; p1=$(t rsync -a "$src/" "$work/plain/")
  "$strata" volume create bench >/dev/null
  "$strata" mount bench "$work/mnt/stage" >/dev/null
  cold; s1=$(t sh -c "rsync -a '$src/' '$work/mnt/stage/' && '$strata' commit bench")
  r1=-; b1=-; r2=-; b2=-
  if [ -z "${BENCH_SKIP_PEERS:-}" ]; then
    restic init >/dev/null 2>&1; borg init --encryption=repokey-blake2 >/dev/null 2>&1
    cold; r1=$(t restic backup "$src")
    cold; b1=$(t borg create --compression lz4 ::one "$src")
  fi
  row "first backup (s) | $p1 | $s1 | $r1 | $b1 | $(ratio "$s1" "$p1") | $(ratio "$s1" "$r1")"
  # No-change pass, BENCH_RUNS times in interleaved rounds (the machine's
  # noise is as large as the differences measured); the table has medians.
  P2=(); S2=(); R2=(); B2=()
  for i in $(seq "$runs"); do
    cold; P2+=("$(t rsync -a "$src/" "$work/plain/")")
    cold; S2+=("$(t sh -c "rsync -a '$src/' '$work/mnt/stage/' && '$strata' commit bench")")
    if [ -z "${BENCH_SKIP_PEERS:-}" ]; then
      cold; R2+=("$(t restic backup "$src")")
      cold; B2+=("$(t borg create --compression lz4 "::two-$i" "$src")")
    fi
  done
  p2=$(median "${P2[@]}"); s2=$(median "${S2[@]}"); r2=$(median "${R2[@]}"); b2=$(median "${B2[@]}")
  detail "no-change pass (s)" P2 S2 R2 B2
  row "no-change pass (s) | $p2 | $s2 | $r2 | $b2 | $(ratio "$s2" "$p2") | $(ratio "$s2" "$r2")"
  # The server exits with its last mount, so the backup and the read-back
  # are two servers: take the peak of each.
  srss_backup=$(server_rss)
  "$strata" umount "$work/mnt/stage" >/dev/null
  # Cold read-back.
  "$strata" mount bench@latest "$work/mnt/rev" >/dev/null
  readback() { (cd "$1" && tar cf - . | cat >/dev/null); }
  rpid=; bmnt=
  if [ -z "${BENCH_SKIP_PEERS:-}" ]; then
    restic mount "$work/mnt/restic" >/dev/null 2>&1 & rpid=$!
    for _ in $(seq 100); do [ -d "$work/mnt/restic/snapshots/latest" ] && break; sleep 0.2; done
    borg mount ::one "$work/mnt/borg" && bmnt=$work/mnt/borg
  fi
  # Interleaved rounds, as for the no-change pass.
  PR=(); SR=(); RR=(); BR=()
  for i in $(seq "$runs"); do
    cold; PR+=("$(t readback "$work/plain")")
    cold; SR+=("$(t readback "$work/mnt/rev")")
    if [ -n "$rpid" ]; then cold; RR+=("$(t readback "$work/mnt/restic/snapshots/latest")"); fi
    if [ -n "$bmnt" ]; then cold; BR+=("$(t readback "$bmnt")"); fi
  done
  [ -n "$rpid" ] && { kill "$rpid"; wait "$rpid" 2>/dev/null || true; }
  [ -n "$bmnt" ] && umount "$bmnt"
  pr=$(median "${PR[@]}"); sr=$(median "${SR[@]}"); rr=$(median "${RR[@]}"); br=$(median "${BR[@]}")
  [ -z "${BENCH_SKIP_PEERS:-}" ] && [ -z "$bmnt" ] && br=n/a
  detail "cold read of everything (s)" PR SR RR BR
  row "cold read of everything (s) | $pr | $sr | $rr | $br | $(ratio "$sr" "$pr") | $(ratio "$sr" "$rr")"
  srss=$(server_rss)
  "$strata" umount "$work/mnt/rev" >/dev/null
  # The server exits with its last mount; until it has, badger's open
  # value log and memtable files count at their preallocated size (140 MiB
  # more in the repository size below, with BENCH_SKIP_PEERS=1).
  for _ in $(seq 100); do [ -n "$(server_pid)" ] || break; sleep 0.1; done
  rrss=-; brss=-
  if [ -z "${BENCH_SKIP_PEERS:-}" ]; then
    echo x >> "$src/$(ls "$src" | head -1)/.touch"
    rrss=$(rss restic backup "$src"); brss=$(rss borg create ::three "$src")
  fi
  row "peak RSS, backup / read-back server (MiB) | - | $srss_backup / $srss | $rrss | $brss | - | -"
  du_s=$(du -sb "$STRATA_REPO" | cut -f1)
  du_r=-; du_b=-
  [ -z "${BENCH_SKIP_PEERS:-}" ] && du_r=$(du -sb "$RESTIC_REPOSITORY" | cut -f1) && du_b=$(du -sb "$BORG_REPO" | cut -f1)
  row "repository size (MiB, strata incl. parity) | $((bytes/1048576)) | $((du_s/1048576)) | $( [ "$du_r" = - ] && echo - || echo $((du_r/1048576))) | $( [ "$du_b" = - ] && echo - || echo $((du_b/1048576))) | - | -"
fi

if [ "${BENCH_ONLY:-block}" = block ] || [ -z "${BENCH_ONLY:-}" ]; then
  row ""
  row "block | qemu-nbd raw | strata | strata/qemu-nbd"
  row "--- | --- | --- | ---"
  img=$work/image.raw
  truncate -s "$imgsize" "$img"
  # Mixed image: 3 MiB of random data in every 8 MiB, the rest zeros.
  python3 - "$img" <<'PY'
import os, sys
f = open(sys.argv[1], "r+b"); size = os.path.getsize(sys.argv[1]); off = 0
while off < size:
    f.seek(off); f.write(os.urandom(3 << 20)); off += 8 << 20
PY
  sock=$work/nbd.sock qsock=$work/qemu.sock
  "$strata" volume create disk --block "$imgsize" >/dev/null
  "$strata" nbd serve --listen "unix:$sock" >/dev/null
  truncate -s "$imgsize" "$work/qemu-target.raw"
  qemu-nbd -f raw -k "$qsock" -x disk -t --cache=writeback "$work/qemu-target.raw" & qpid=$!
  for _ in $(seq 50); do [ -S "$qsock" ] && break; sleep 0.1; done
  cold; qin=$(t nbdcopy "$img" "nbd+unix:///disk?socket=$qsock")
  cold; sin=$(t sh -c "nbdcopy '$img' 'nbd+unix:///disk?socket=$sock' && '$strata' commit disk")
  row "nbdcopy in (s) | $qin | $sin | $(ratio "$sin" "$qin")"
  cold; qout=$(t nbdcopy "nbd+unix:///disk?socket=$qsock" null:)
  cold; sout=$(t nbdcopy "nbd+unix:///disk@latest?socket=$sock" null:)
  row "nbdcopy out (s) | $qout | $sout | $(ratio "$sout" "$qout")"
  # Random 4 KiB reads at queue depth 32 over the whole image, 20 s each.
  iops() { fio --name=r --ioengine=nbd --uri="$1" --rw=randread --bs=4k --iodepth=32 \
    --size="$imgsize" --runtime=20 --time_based --output-format=terse --terse-version=3 2>/dev/null | awk -F';' 'NF > 8 {print $8}'; }
  cold; qi=$(iops "nbd+unix:///disk?socket=$qsock")
  cold; si=$(iops "nbd+unix:///disk@latest?socket=$sock")
  row "random 4 KiB reads, depth 32 (IOPS, higher is better) | $qi | $si | $(ratio "$si" "$qi")"
  before=$(du -sb "$STRATA_REPO/shards" | cut -f1)
  python3 - "$(stat -c %s "$img")" <<'PY' > "$work/qemu-io.cmds"
import random, sys
random.seed(1)
size = int(sys.argv[1])
for _ in range(1000):
    print("write -P 0x5a %d 4k" % (random.randrange(0, size // 4096) * 4096))
PY
  args=(); while read -r l; do args+=(-c "$l"); done < "$work/qemu-io.cmds"
  qemu-io -f raw "${args[@]}" "nbd+unix:///disk?socket=$sock" >/dev/null
  ci=$(t "$strata" commit disk)
  after=$(du -sb "$STRATA_REPO/shards" | cut -f1)
  row "1,000 scattered 4 KiB writes: commit (s) / stored MiB incl. parity | - | $ci / $(( (after-before)/1048576 )) | -"
  "$strata" nbd stop --listen "unix:$sock" >/dev/null
fi
echo
printf '%s\n' "${rows[@]}"
if [ ${#details[@]} -gt 0 ]; then
  echo
  echo "Medians of $runs interleaved rounds; every run:"
  echo
  echo "| what | plain | strata | restic | borg |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${details[@]}"
fi
