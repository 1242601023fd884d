package layers

import (
	"context"
	"errors"
)

var errStub = errors.New("layers: not implemented yet")

func (r *Repo) Diff(ctx context.Context, volume, a, b string, fn func(DiffEntry) error) error {
	return errStub
}
