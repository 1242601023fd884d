package key

import (
	"errors"
	"fmt"
	"io"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// ExportEscrow writes an armored OpenPGP message holding m and the
// repository id that stock `gpg --decrypt` (GnuPG 2.2 and later) opens with
// pass or with the secret key of any key in armoredPublicKeys. Either may
// be empty/nil, not both. It uses iterated+salted S2K and SEIPD v1 with
// MDC, which GnuPG 2.2 reads (it knows neither Argon2 nor AEAD packets).
func ExportEscrow(w io.Writer, m Master, repoID string, pass []byte, armoredPublicKeys io.Reader) error {
	return exportEscrow(w, m, repoID, pass, armoredPublicKeys, time.Now, escrowS2KCount)
}

// escrowS2KCount is the highest iteration count OpenPGP can encode: an
// escrow file sits offline for years and is opened rarely, so make
// guessing its passphrase as slow as the format allows (~0.3 s to open).
const escrowS2KCount = 65011712

func exportEscrow(w io.Writer, m Master, repoID string, pass []byte, armoredPublicKeys io.Reader, now func() time.Time, s2kCount int) error {
	body := encodeBody(m, repoID)
	cfg := gpg22Config(now)
	cfg.S2KConfig.S2KCount = s2kCount
	var to openpgp.EntityList
	if armoredPublicKeys != nil {
		var err error
		if to, _, err = readRecipients(armoredPublicKeys, now()); err != nil {
			return fmt.Errorf("export escrow: %w", err)
		}
	} else if len(pass) == 0 {
		return fmt.Errorf("export escrow: %w", ErrNoCredentials)
	}
	var passwords [][]byte
	if len(pass) > 0 {
		passwords = [][]byte{pass}
	}
	msg, err := encryptV1(body, to, passwords, cfg)
	if err != nil {
		return fmt.Errorf("export escrow: encrypt: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("export escrow: %w", err)
	}
	return nil
}

// LoadEscrow reads a message written by ExportEscrow (or a ring entry's
// .asc file) and returns the master key and the repository id it names
// (empty for ring entries). c.Passphrase and/or c.Identity open it;
// errors are as for Ring.Unlock.
func LoadEscrow(r io.Reader, c Credentials) (Master, string, error) {
	if len(c.Passphrase) == 0 && len(c.Identity) == 0 {
		return Master{}, "", fmt.Errorf("load escrow: %w", ErrNoCredentials)
	}
	msg, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return Master{}, "", fmt.Errorf("load escrow: %w", err)
	}
	var body []byte
	var errs []error
	if len(c.Passphrase) > 0 {
		body, err = decrypt(msg, c.Passphrase, nil, readConfig(time.Now))
		switch {
		case err == nil:
		case errors.Is(err, ErrCorrupt):
			errs = append(errs, fmt.Errorf("passphrase: %w", err))
		default:
			errs = append(errs, fmt.Errorf("passphrase: %v: %w", err, ErrWrongPassphrase))
		}
	}
	if body == nil && len(c.Identity) > 0 {
		keys, ierr := identity(c.Identity, c.IdentityPassphrase)
		if ierr != nil {
			errs = append(errs, ierr)
		} else if body, err = decrypt(msg, nil, keys, readConfig(time.Now)); err != nil {
			if errors.Is(err, ErrCorrupt) {
				errs = append(errs, fmt.Errorf("identity: %w", err))
			} else {
				errs = append(errs, fmt.Errorf("identity: %v: %w", err, ErrNoMatchingKey))
			}
		}
	}
	if body == nil {
		return Master{}, "", fmt.Errorf("load escrow: %w", errors.Join(errs...))
	}
	m, repoID, err := parseBody(body)
	if err != nil {
		return Master{}, "", fmt.Errorf("load escrow: %w", err)
	}
	return m, repoID, nil
}
