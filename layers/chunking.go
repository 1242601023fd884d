package layers

import (
	"io"
)

// fileChunkSize is the piece size of the interim fixed-size splitter used
// until store/chunker lands; content-defined chunking replaces it.
const fileChunkSize = 1 << 20

// splitData cuts the n bytes read from r (which start at file offset base)
// into chunks and calls put for each. The chunk slice is reused.
func splitData(r io.Reader, base, n int64, put func(data []byte, off int64) error) error {
	buf := make([]byte, min(n, fileChunkSize))
	off := base
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if perr := put(buf[:n], off); perr != nil {
				return perr
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
