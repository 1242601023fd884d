// Package tests drives the real strata binary end to end with the real
// tools users run: rsync into FUSE mounts, nbdcopy/nbdinfo/qemu-img against
// the NBD server, gpg for escrow keys, mount -o loop for disk images.
//
// Each test's comment lists its steps and what must hold. The binary comes
// from STRATA_BIN (make test sets it) or is built once by TestMain. Missing
// tools fail the tests; only STRATA_SKIP_E2E=1 skips them.
package tests
