package layers

import (
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-backup/strata/store/chunk"
)

// revRecord is the stored form of a revision (l/r/<vid><seq>).
type revRecord struct {
	Revision
	Meta []chunk.ID `json:"meta,omitempty"` // meta chunks holding the layer's records
}

// revisions lists the volume's revisions, oldest first.
func (v *volume) revisions() ([]revRecord, error) {
	var out []revRecord
	err := v.r.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = revisionPrefix(v.id)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var rr revRecord
			if err := json.Unmarshal(b, &rr); err != nil {
				return fmt.Errorf("decode revision: %w", err)
			}
			rr.Volume = v.rec.Name
			out = append(out, rr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list revisions of %s: %w", v.rec.Name, err)
	}
	return out, nil
}
