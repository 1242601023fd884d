package shard_test

import (
	"testing"

	"github.com/strata-backup/strata/store/shard"
	"github.com/strata-backup/strata/store/shard/shardtest"
)

func TestLocal(t *testing.T) {
	shardtest.Run(t, func(t *testing.T) shard.Backend {
		b, err := shard.OpenLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestFaultyPassesSuite(t *testing.T) {
	shardtest.Run(t, func(t *testing.T) shard.Backend {
		b, err := shard.OpenLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return shardtest.NewFaulty(b)
	})
}

func TestOpenLocalErrors(t *testing.T) {
	if _, err := shard.OpenLocal(t.TempDir() + "/missing"); err == nil {
		t.Fatal("OpenLocal of a missing dir succeeded")
	}
}
