package key

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
)

// bodyMagic starts every plaintext we wrap. The format is line based
// "name: value" so a person decrypting a file by hand can read it.
const bodyMagic = "strata master key v1"

func encodeBody(m Master, repoID string) []byte {
	var b bytes.Buffer
	b.WriteString(bodyMagic + "\n")
	if repoID != "" {
		b.WriteString("# Recovery copy of a strata repository's master key. Keep it offline.\n")
		b.WriteString("# Restore it with: strata key import --escrow FILE\n")
		fmt.Fprintf(&b, "repository: %s\n", repoID)
	}
	fmt.Fprintf(&b, "master-key: %s\n", hex.EncodeToString(m[:]))
	return b.Bytes()
}

func parseBody(p []byte) (m Master, repoID string, err error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != bodyMagic {
		return m, "", fmt.Errorf("parse key message: does not start with %q: %w", bodyMagic, ErrCorrupt)
	}
	found := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return m, "", fmt.Errorf("parse key message: line %q: %w", line, ErrCorrupt)
		}
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(name) {
		case "repository":
			repoID = value
		case "master-key":
			b, err := hex.DecodeString(value)
			if err != nil || len(b) != len(m) {
				return m, "", fmt.Errorf("parse key message: master-key is not 64 hex digits: %w", ErrCorrupt)
			}
			copy(m[:], b)
			found = true
		}
	}
	if !found {
		return m, "", fmt.Errorf("parse key message: no master-key line: %w", ErrCorrupt)
	}
	return m, repoID, nil
}
