#!/usr/bin/env bash
# backup-rsync.sh VOLUME — one backup of a file tree into strata:
# mount staging, rsync SOURCE into it, commit with the schedule's due tags,
# unmount, prune by the schedule. Configure with environment variables:
#   STRATA_REPO        repository (and STRATA_PASSPHRASE_FILE or a running server)
#   SOURCE             rsync source, e.g. root@web1:/ or /home/
#   RSYNC_OPTS         default: -aHAXS --delete --numeric-ids --one-file-system
#   SCHEDULE           default daily=1d:7,weekly=1w:4,monthly=30d:12
#   MNT                default /run/strata/VOLUME
set -euo pipefail
vol=${1:?usage: backup-rsync.sh VOLUME}
: "${SOURCE:?set SOURCE to the rsync source}"
opts=${RSYNC_OPTS:--aHAXS --delete --numeric-ids --one-file-system}
schedule=${SCHEDULE:-daily=1d:7,weekly=1w:4,monthly=30d:12}
mnt=${MNT:-/run/strata/$vol}
pf=()
[ -n "${STRATA_PASSPHRASE_FILE:-}" ] && pf=(--passphrase-file "$STRATA_PASSPHRASE_FILE")
mkdir -p "$mnt"
strata "${pf[@]}" mount "$vol" "$mnt"
trap 'strata "${pf[@]}" umount "$mnt" || true' EXIT
# rsync exit 24 (files vanished during transfer) is normal on a live system.
rsync $opts "$SOURCE" "$mnt/" || [ $? -eq 24 ]
strata "${pf[@]}" commit "$vol" --schedule "$schedule" -m "backup of $SOURCE"
strata "${pf[@]}" umount "$mnt"
trap - EXIT
strata "${pf[@]}" prune "$vol" --schedule "$schedule"
