package layers

import (
	"context"
	"errors"
)

var errStub = errors.New("layers: not implemented yet")

const DefaultBlockSize = 64 << 10

type disk struct{}

func (v *volume) stagingDisk() *Disk                 { return nil }
func (d *Disk) flushDirty(ctx context.Context) error { return nil }
func (d *Disk) dropDirty()                           {}

func (d *Disk) flush(ctx context.Context) error { return nil }

func (r *Repo) Diff(ctx context.Context, volume, a, b string, fn func(DiffEntry) error) error {
	return errStub
}
func (r *Repo) StagingDisk(ctx context.Context, volume string) (*Disk, error) { return nil, errStub }
func (r *Repo) RevisionDisk(ctx context.Context, volume, id string) (*Disk, error) {
	return nil, errStub
}
func (d *Disk) Size() int64                                                   { return 0 }
func (d *Disk) BlockSize() int                                                { return 0 }
func (d *Disk) ReadOnly() bool                                                { return true }
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) (int, error)  { return 0, errStub }
func (d *Disk) WriteAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, errStub }
func (d *Disk) Zero(ctx context.Context, off, length int64) error             { return errStub }
func (d *Disk) Flush(ctx context.Context) error                               { return errStub }
func (d *Disk) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	return nil, errStub
}
func (d *Disk) Overlay(ctx context.Context) (*Disk, error) { return nil, errStub }
func (d *Disk) Close() error                               { return errStub }
