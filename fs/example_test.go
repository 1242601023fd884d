package fs_test

import (
	"context"
	"log"

	"github.com/strata-backup/strata/fs"
	"github.com/strata-backup/strata/layers"
)

// Mount a volume's staging head, let rsync write into it, and unmount,
// which makes everything durable.
func ExampleMountStaging() {
	var repo *layers.Repo // from layers.Open
	ctx := context.Background()
	st, err := repo.Staging(ctx, "home")
	if err != nil {
		log.Fatal(err)
	}
	m, err := fs.MountStaging(ctx, "/mnt/staging", st, fs.Options{Repo: repo})
	if err != nil {
		log.Fatal(err)
	}
	// ... rsync -aHAXS --delete --numeric-ids /home/ /mnt/staging/ ...
	if err := m.Unmount(); err != nil {
		log.Fatal(err)
	}
}

// Browse every volume and revision read-only.
func ExampleMountBrowse() {
	var repo *layers.Repo // from layers.Open
	m, err := fs.MountBrowse(context.Background(), "/mnt/strata", repo, fs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	m.Wait() // until umount /mnt/strata
}
