package key

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// maxBody bounds what we read from a decrypted message: bodies are a few
// hundred bytes, and a hostile file must not make us buffer gigabytes.
const maxBody = 64 << 10

// Argon2 sets the cost of the Argon2id S2K for passphrase entries.
type Argon2 struct {
	Passes      uint8  // zero = DefaultArgon2Passes
	Parallelism uint8  // zero = DefaultArgon2Parallelism
	MemoryKiB   uint32 // zero = DefaultArgon2MemoryKiB; rounded up to a power of two
}

// Default Argon2id cost: RFC 9106's second recommended setting (t=3,
// 64 MiB, p=4). Measured with golang.org/x/crypto/argon2 on this 2-core
// machine: 180-250 ms per unlock when the machine is quiet (up to ~430 ms
// under load from parallel builds). t=2 with 128 MiB took ~650 ms and t=1
// with 64 MiB ~35 ms, so this sits in the 100-300 ms target.
const (
	DefaultArgon2Passes      = 3
	DefaultArgon2Parallelism = 4
	DefaultArgon2MemoryKiB   = 64 << 10
)

func (a Argon2) config() *s2k.Argon2Config {
	if a.Passes == 0 {
		a.Passes = DefaultArgon2Passes
	}
	if a.Parallelism == 0 {
		a.Parallelism = DefaultArgon2Parallelism
	}
	if a.MemoryKiB == 0 {
		a.MemoryKiB = DefaultArgon2MemoryKiB
	}
	return &s2k.Argon2Config{NumberOfPasses: a.Passes, DegreeOfParallelism: a.Parallelism, Memory: a.MemoryKiB}
}

// passphraseConfig is for our own passphrase entries: Argon2id and AEAD
// (SKESK v6 + SEIPD v2).
func passphraseConfig(a Argon2, now func() time.Time) *packet.Config {
	return &packet.Config{
		Time:          now,
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   crypto.SHA256,
		S2KConfig:     &s2k.Config{S2KMode: s2k.Argon2S2K, Argon2Config: a.config()},
		AEADConfig:    &packet.AEADConfig{DefaultMode: packet.AEADModeOCB},
	}
}

// gpg22Config is for files stock GnuPG 2.2 must open: iterated+salted
// SHA-256 S2K, SEIPD v1 with MDC (AEADConfig nil), AES-256.
func gpg22Config(now func() time.Time) *packet.Config {
	return &packet.Config{
		Time:          now,
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   crypto.SHA256,
		S2KConfig:     &s2k.Config{S2KMode: s2k.IteratedSaltedS2K, Hash: crypto.SHA256, S2KCount: escrowS2KCount},
	}
}

// readConfig is used for decryption.
func readConfig(now func() time.Time) *packet.Config {
	return &packet.Config{Time: now}
}

// readKeys parses OpenPGP keys: binary, or one or more armored blocks one
// after the other (as `cat a.asc b.asc` gives).
func readKeys(data []byte) (openpgp.EntityList, error) {
	if !bytes.Contains(data, []byte("-----BEGIN PGP")) {
		return openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	var all openpgp.EntityList
	for _, blk := range splitArmor(data) {
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(blk))
		if err != nil {
			return nil, err
		}
		all = append(all, el...)
	}
	return all, nil
}

// splitArmor cuts data into its armored blocks; armor.Decode reads ahead
// and cannot be called twice on one reader.
func splitArmor(data []byte) [][]byte {
	var out [][]byte
	for {
		i := bytes.Index(data, []byte("-----BEGIN PGP"))
		if i < 0 {
			return out
		}
		data = data[i:]
		j := bytes.Index(data, []byte("-----END PGP"))
		if j < 0 {
			return append(out, data)
		}
		end := j + len("-----END PGP")
		k := bytes.Index(data[end:], []byte("-----"))
		if k < 0 {
			return append(out, data)
		}
		end += k + len("-----")
		out = append(out, data[:end])
		data = data[end:]
	}
}

// readRecipients parses public keys to encrypt to and checks that each has
// a usable encryption key at now.
func readRecipients(r io.Reader, now time.Time) (openpgp.EntityList, []string, error) {
	if r == nil {
		return nil, nil, fmt.Errorf("read recipient keys: none given: %w", ErrBadKey)
	}
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("read recipient keys: %w", err)
	}
	el, err := readKeys(data)
	if err != nil {
		return nil, nil, fmt.Errorf("read recipient keys: %v: %w", err, ErrBadKey)
	}
	if len(el) == 0 {
		return nil, nil, fmt.Errorf("read recipient keys: no keys found: %w", ErrBadKey)
	}
	var fprs []string
	for _, e := range el {
		fpr := fingerprint(e.PrimaryKey.Fingerprint)
		if _, err := e.EncryptionKeyWithError(now, nil); err != nil {
			return nil, nil, fmt.Errorf("recipient key %s: no usable encryption key: %v: %w", fpr, err, ErrBadKey)
		}
		fprs = append(fprs, fpr)
	}
	return el, fprs, nil
}

func fingerprint(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

// armored runs write with a writer that armors into w as a PGP MESSAGE.
func armored(w io.Writer, write func(io.Writer) error) error {
	aw, err := armor.Encode(w, "PGP MESSAGE", nil)
	if err != nil {
		return err
	}
	if err := write(aw); err != nil {
		return err
	}
	return aw.Close()
}

// writeLiteral finishes an encrypting writer with body.
func writeLiteral(pt io.WriteCloser, err error, body []byte) error {
	if err != nil {
		return err
	}
	if _, err := pt.Write(body); err != nil {
		return err
	}
	return pt.Close()
}

// encryptPassphrase returns an armored message of body under pass.
func encryptPassphrase(body, pass []byte, cfg *packet.Config) ([]byte, error) {
	var buf bytes.Buffer
	err := armored(&buf, func(w io.Writer) error {
		pt, err := openpgp.SymmetricallyEncryptWithParams(pass, w, &openpgp.EncryptParams{Config: cfg})
		return writeLiteral(pt, err, body)
	})
	return buf.Bytes(), err
}

// encryptTo returns an armored message of body to the recipients; it
// follows their preferences (SEIPD v2 only if all of them announce it).
func encryptTo(body []byte, to openpgp.EntityList, cfg *packet.Config) ([]byte, error) {
	var buf bytes.Buffer
	err := armored(&buf, func(w io.Writer) error {
		pt, err := openpgp.EncryptWithParams(w, to, nil, &openpgp.EncryptParams{Config: cfg})
		return writeLiteral(pt, err, body)
	})
	return buf.Bytes(), err
}

// encryptV1 returns an armored message of body that GnuPG 2.2 reads:
// AES-256 session key, one PKESK v3 per recipient, one SKESK v4
// (iterated+salted S2K from cfg) per password, SEIPD v1 with MDC. It is
// built from packets because go-crypto's Encrypt picks the data cipher
// from the recipients' preferences but writes password packets with
// cfg's cipher, which disagree for keys preferring AES-128.
func encryptV1(body []byte, to openpgp.EntityList, passwords [][]byte, cfg *packet.Config) ([]byte, error) {
	now := cfg.Now()
	sk := make([]byte, packet.CipherAES256.KeySize())
	rand.Read(sk)
	defer clear(sk)
	var buf bytes.Buffer
	err := armored(&buf, func(w io.Writer) error {
		for _, e := range to {
			k, err := e.EncryptionKeyWithError(now, cfg)
			if err != nil {
				return fmt.Errorf("recipient %s: %w", fingerprint(e.PrimaryKey.Fingerprint), err)
			}
			if err := packet.SerializeEncryptedKeyAEAD(w, k.PublicKey, packet.CipherAES256, false, sk, cfg); err != nil {
				return err
			}
		}
		for _, p := range passwords {
			if err := packet.SerializeSymmetricKeyEncryptedAEADReuseKey(w, sk, p, false, cfg); err != nil {
				return err
			}
		}
		ew, err := packet.SerializeSymmetricallyEncrypted(w, packet.CipherAES256, false, packet.CipherSuite{}, sk, cfg)
		if err != nil {
			return err
		}
		lw, err := packet.SerializeLiteral(ew, true, "", uint32(now.Unix()))
		return writeLiteral(lw, err, body)
	})
	return buf.Bytes(), err
}

// errPromptAgain stops go-crypto's prompt loop after the one passphrase we
// have was rejected.
var errPromptAgain = errors.New("passphrase rejected")

// decrypt opens an armored or binary message with a passphrase and/or a
// keyring holding decrypted secret keys, verifies its integrity (MDC or
// AEAD, checked at the end of the body) and returns the body.
func decrypt(msg []byte, pass []byte, keyring openpgp.KeyRing, cfg *packet.Config) ([]byte, error) {
	var r io.Reader = bytes.NewReader(msg)
	if bytes.Contains(msg, []byte("-----BEGIN PGP")) {
		block, err := armor.Decode(r)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, ErrCorrupt)
		}
		if block.Type != "PGP MESSAGE" {
			return nil, fmt.Errorf("armored %q block, want PGP MESSAGE: %w", block.Type, ErrCorrupt)
		}
		r = block.Body
	}
	asked := false
	var prompt openpgp.PromptFunction
	if len(pass) > 0 {
		prompt = func(keys []openpgp.Key, symmetric bool) ([]byte, error) {
			if !symmetric || asked {
				return nil, errPromptAgain
			}
			asked = true
			return pass, nil
		}
	}
	if keyring == nil {
		keyring = openpgp.EntityList(nil)
	}
	md, err := openpgp.ReadMessage(r, keyring, prompt, cfg)
	if err != nil {
		if notAMessage(err) {
			return nil, fmt.Errorf("not an OpenPGP message: %v: %w", err, ErrCorrupt)
		}
		return nil, err
	}
	if !md.IsEncrypted {
		return nil, fmt.Errorf("message is not encrypted: %w", ErrCorrupt)
	}
	body, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("integrity check: %v: %w", err, ErrCorrupt)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("message body longer than %d bytes: %w", maxBody, ErrCorrupt)
	}
	return body, nil
}

// identity parses an armored secret key and unlocks it with pass if it is
// protected.
func identity(armoredKey, pass []byte) (openpgp.EntityList, error) {
	el, err := readKeys(armoredKey)
	if err != nil {
		return nil, fmt.Errorf("read identity: %v: %w", err, ErrBadKey)
	}
	var secret openpgp.EntityList
	for _, e := range el {
		if !hasSecret(e) {
			continue
		}
		if err := e.DecryptPrivateKeys(pass); err != nil {
			le := &IdentityLockedError{Fingerprint: fingerprint(e.PrimaryKey.Fingerprint), Given: len(pass) > 0}
			if le.Given {
				le.Err = err
			}
			return nil, le
		}
		secret = append(secret, e)
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("read identity: no secret key in it (a public key was given?): %w", ErrBadKey)
	}
	return secret, nil
}

func hasSecret(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && !e.PrivateKey.Dummy() {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && !s.PrivateKey.Dummy() {
			return true
		}
	}
	return false
}

// notAMessage tells errors about the input's structure, which no
// passphrase or key would cure, from a passphrase or key that does not fit
// (errPromptAgain, ErrKeyIncorrect): a user given "wrong passphrase" for a
// file that is not an escrow copy at all would look for the wrong fault.
func notAMessage(err error) bool {
	var (
		se  pgperrors.StructuralError
		ue  pgperrors.UnsupportedError
		ce  pgperrors.CriticalUnknownPacketTypeError
		upe pgperrors.UnknownPacketTypeError
		me  pgperrors.ErrMalformedMessage
	)
	return errors.As(err, &se) || errors.As(err, &ue) || errors.As(err, &ce) || errors.As(err, &upe) || errors.As(err, &me) || errors.Is(err, io.ErrUnexpectedEOF)
}
