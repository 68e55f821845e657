// Package dkim signs mail for mxdetour-milter (RFC 6376, with Ed25519 keys
// per RFC 8463) on github.com/emersion/go-msgauth: the key table, key
// files, streaming signatures, and key generation.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/mxdetour/mxdetour/internal/domain"
)

// KeyRow is one key of the table as configured ([[milter.dkim.keys]]) or
// found in key_dir: a domain, its selector, and the private key's file.
type KeyRow struct {
	Domain, Selector, KeyFile string
	Subdomains                bool // also sign for subdomains of Domain
}

// Key is one row of the key table, with its private key loaded.
type Key struct {
	Domain, Selector, File string
	Subdomains             bool
	Signer                 crypto.Signer
	Algorithm              string // "rsa" or "ed25519"
	Bits                   int
	FromDir                bool // found in key_dir, not a row of the configuration
}

// Table maps signing domains to their keys, and remembers what became of
// every row of the configuration (Status).
type Table struct {
	byDomain      map[string][]*Key
	n             int
	rows          []row
	defaultDomain string // signs for domains without keys; "" = none
	dirErr        error  // why key_dir could not be read
}

// row is one configured key and what became of it.
type row struct {
	cfg   KeyRow
	key   *Key  // nil when the row failed and nothing was kept
	err   error // why the file did not load
	state KeyState
	dir   bool // found in key_dir
	whole bool // stands for key_dir itself, which could not be read
}

// KeyState says whether a configured key signs.
type KeyState string

// The states of a configured key.
const (
	// Loaded: the key file loaded; the key signs.
	Loaded KeyState = "loaded"
	// Failed: the key file did not load and no earlier copy is kept: the
	// key does not sign.
	Failed KeyState = "failed"
	// Kept: the key file fails now, and the key loaded from it before (at
	// start or at an earlier reload) still signs; see KeepFrom.
	Kept KeyState = "kept"
)

// KeyStatus is one configured key as the metrics and logs show it.
type KeyStatus struct {
	Domain, Selector, File string
	State                  KeyState
	Err                    error // why the file did not load; nil when Loaded
	FromDir                bool  // found in key_dir; File is key_dir itself when Domain is ""
}

// KeyError is a configured key whose file did not load. Its text names
// the file and the reason.
type KeyError struct {
	Domain, Selector, File string
	Err                    error
}

func (e *KeyError) Error() string { return e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// LoadTable reads every key file of rows. A key file readable by group or
// others is refused unless allowGroupReadable (then only world-readable
// ones are). RSA keys under 1024 bits are refused, under 2048 accepted with
// a warning.
//
// A bad row does not spoil the good ones: the table returned holds every
// key that loaded, always, and err joins one *KeyError per row that did
// not (nil when all loaded). The daemon signs with that table and logs err
// (degraded, not down); -check-config refuses it.
func LoadTable(rows []KeyRow, allowGroupReadable bool) (*Table, []string, error) {
	return loadTable(rows, len(rows), allowGroupReadable)
}

// loadTable is LoadTable where the rows from configured on are files
// found in key_dir.
func loadTable(rows []KeyRow, configured int, allowGroupReadable bool) (*Table, []string, error) {
	t := &Table{}
	var warnings []string
	var errs []error
	for i, r := range rows {
		dir := i >= configured
		k, warn, err := loadKey(r, allowGroupReadable)
		if err != nil {
			errs = append(errs, &KeyError{Domain: r.Domain, Selector: r.Selector, File: r.KeyFile, Err: err})
			t.rows = append(t.rows, row{cfg: r, err: err, state: Failed, dir: dir})
			continue
		}
		if warn != "" {
			warnings = append(warnings, warn)
		}
		k.FromDir = dir
		t.rows = append(t.rows, row{cfg: r, key: k, state: Loaded, dir: dir})
	}
	t.index()
	return t, warnings, errors.Join(errs...)
}

// KeepFrom gives each row of t that failed the key prev signs with for the
// same domain and selector, if any, and returns what it kept. A reload
// calls it before the table is in use: a key file that became unreadable
// or was overwritten by mistake then costs no signatures, because the key
// already in memory is still the one the DNS record publishes. The
// selector names the DNS record, so a key is kept only under its own
// domain and selector; the rest of the new row (subdomains) applies.
func (t *Table) KeepFrom(prev *Table) []KeyStatus {
	if prev == nil {
		return nil
	}
	var kept []KeyStatus
	for i := range t.rows {
		r := &t.rows[i]
		if r.state != Failed || r.whole {
			continue
		}
		old := prev.signing(r.cfg.Domain, r.cfg.Selector)
		if old == nil {
			continue
		}
		k := *old
		k.Subdomains = r.cfg.Subdomains
		r.key, r.state = &k, Kept
		kept = append(kept, r.status())
	}
	if t.dirErr != nil {
		// key_dir could not be read: its keys of before sign on, each
		// reported as kept, unless a row now names the same key.
		for _, pr := range prev.rows {
			if !pr.dir || pr.key == nil || t.signing(pr.key.Domain, pr.key.Selector) != nil {
				continue
			}
			k := *pr.key
			r := row{cfg: pr.cfg, key: &k, err: t.dirErr, state: Kept, dir: true}
			t.rows = append(t.rows, r)
			kept = append(kept, r.status())
		}
	}
	t.index()
	return kept
}

// signing returns the key that signs for domain and selector, or nil.
func (t *Table) signing(domainName, selector string) *Key {
	d, err := domain.Normalize(domainName)
	if err != nil {
		return nil
	}
	for _, r := range t.rows {
		if r.key != nil && r.key.Domain == d && r.key.Selector == selector {
			return r.key
		}
	}
	return nil
}

// index rebuilds the domain map from the rows, in configuration order.
func (t *Table) index() {
	t.byDomain, t.n = map[string][]*Key{}, 0
	for _, r := range t.rows {
		if r.key != nil {
			t.byDomain[r.key.Domain] = append(t.byDomain[r.key.Domain], r.key)
			t.n++
		}
	}
}

// Status lists every configured key in configuration order.
func (t *Table) Status() []KeyStatus {
	if t == nil {
		return nil
	}
	out := make([]KeyStatus, len(t.rows))
	for i, r := range t.rows {
		out[i] = r.status()
	}
	return out
}

func (r row) status() KeyStatus {
	return KeyStatus{Domain: r.cfg.Domain, Selector: r.cfg.Selector, File: r.cfg.KeyFile, State: r.state, Err: r.err, FromDir: r.dir}
}

func loadKey(r KeyRow, allowGroupReadable bool) (*Key, string, error) {
	d, err := domain.Normalize(r.Domain)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %s: %w", r.KeyFile, err)
	}
	fi, err := os.Stat(r.KeyFile)
	if err != nil {
		return nil, "", fileError(d, r.KeyFile, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, "", fmt.Errorf("dkim key %s is not a regular file", r.KeyFile)
	}
	mask := os.FileMode(0o077)
	if allowGroupReadable {
		mask = 0o007
	}
	if perm := fi.Mode().Perm(); perm&mask != 0 {
		return nil, "", fmt.Errorf("dkim key %s has mode %04o: readable by others; chmod 600 it (or 640 with allow_group_readable_keys)", r.KeyFile, perm)
	}
	data, err := os.ReadFile(r.KeyFile)
	if err != nil {
		return nil, "", fileError(d, r.KeyFile, err)
	}
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %s %w", r.KeyFile, err)
	}
	k := &Key{Domain: d, Selector: r.Selector, File: r.KeyFile, Subdomains: r.Subdomains, Signer: signer}
	var warn string
	switch pk := signer.(type) {
	case *rsa.PrivateKey:
		k.Algorithm, k.Bits = "rsa", pk.N.BitLen()
		if k.Bits < 1024 {
			return nil, "", fmt.Errorf("dkim key %s: RSA key of %d bits is too weak (RFC 8301 wants at least 1024)", r.KeyFile, k.Bits)
		}
		if k.Bits < 2048 {
			warn = fmt.Sprintf("dkim key %s: RSA key of %d bits; use 2048 or more", r.KeyFile, k.Bits)
		}
	case ed25519.PrivateKey:
		k.Algorithm, k.Bits = "ed25519", 256
	}
	return k, warn, nil
}

// fileError words a failure to stat or read a key file. The daemon runs as
// user mxdetour (contrib/systemd): a key written by root, by keygen run as
// root for instance, is unreadable to it, and the error says how to fix it.
func fileError(d, file string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("dkim key for %s: %w: the milter runs as user mxdetour; chown mxdetour %s (keep it mode 0600) and make its directory searchable by mxdetour", d, err, file)
	}
	return fmt.Errorf("dkim key for %s: %w", d, err)
}

// ParsePrivateKey reads a private key in the forms keygen writes (PEM
// PKCS#8, RSA or Ed25519) and the PEM form older opendkim-genkey writes
// (PKCS#1 "RSA PRIVATE KEY"). Anything else is refused with an error that
// says what data holds instead, worded to follow a file name ("FILE holds
// a public key ..."): above all a public key, whose signatures would
// never verify.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, notPEM(data)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("holds more than one PEM block (%s, then %s): keep only the private key", block.Type, next.Type)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("holds a PRIVATE KEY block that is not a PKCS#8 private key%s: %w", derHint(block.Bytes), err)
		}
		return signer(k)
	case "RSA PRIVATE KEY":
		if _, encrypted := block.Headers["DEK-Info"]; encrypted {
			return nil, errors.New(encryptedKey)
		}
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("holds an RSA PRIVATE KEY block that is not a PKCS#1 private key%s: %w", derHint(block.Bytes), err)
		}
		return k, nil
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		return nil, errors.New("holds a public key (PEM " + block.Type + "; the DNS record's p= value is its base64), not a private key" + nameThePrivateKey)
	case "CERTIFICATE":
		return nil, errors.New("holds a certificate, not a private key (DKIM uses none)" + nameThePrivateKey)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New(encryptedKey)
	case "EC PRIVATE KEY":
		return nil, errors.New("holds an EC (ECDSA) private key: DKIM signs with RSA or Ed25519 (RFC 6376, RFC 8463); write a key with mxdetour-milter keygen")
	}
	return nil, fmt.Errorf("holds a PEM %q block, not a private key%s", block.Type, nameThePrivateKey)
}

const (
	nameThePrivateKey = "; key_file must name a private key such as mxdetour-milter keygen writes (PEM PKCS#8)"
	encryptedKey      = "holds an encrypted private key: the milter cannot ask for its passphrase; decrypt it (openssl pkey -in FILE -out NEW) and keep NEW mode 0600"
)

// signer accepts the key types DKIM signs with.
func signer(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("holds a PKCS#8 private key of a kind DKIM does not use (%T): DKIM signs with RSA or Ed25519 (RFC 6376, RFC 8463)", k)
}

// notPEM says what data without PEM armour holds: most often a DNS
// record or its p= value put where the private key belongs.
func notPEM(data []byte) error {
	text := strings.TrimSpace(string(data))
	switch {
	case text == "":
		return errors.New("is empty: it holds no private key")
	case strings.Contains(text, "v=DKIM1") || strings.Contains(text, "_domainkey") ||
		strings.HasPrefix(text, "p=") || strings.Contains(text, " p=") || strings.Contains(text, ";p="):
		return errors.New("holds a DNS TXT record (the public key), not a private key" + nameThePrivateKey)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil {
		if hint := derHint(data); hint != "" {
			return fmt.Errorf("holds binary DER data%s, not a PEM private key%s", hint, nameThePrivateKey)
		}
		return errors.New("holds no PEM private key (no -----BEGIN PRIVATE KEY----- line)" + nameThePrivateKey)
	}
	switch len(raw) {
	case ed25519.PublicKeySize:
		return errors.New("holds a public key (the DNS record's p= value, 32 bytes: an Ed25519 public key, or a bare seed, which cannot be told apart), not a private key" + nameThePrivateKey)
	case ed25519.PrivateKeySize:
		return errors.New("holds a raw 64-byte Ed25519 key, not a PEM private key" + nameThePrivateKey)
	}
	if _, err := x509.ParsePKIXPublicKey(raw); err == nil {
		return errors.New("holds a public key (the DNS record's p= value), not a private key" + nameThePrivateKey)
	}
	if hint := derHint(raw); hint != "" {
		return fmt.Errorf("holds base64 DER data%s without its PEM lines, not a PEM private key%s", hint, nameThePrivateKey)
	}
	return fmt.Errorf("holds %d bytes of base64, not a PEM private key%s", len(raw), nameThePrivateKey)
}

// derHint names what DER data is, as " (a public key)", or "" when it
// is none of the structures a key file is mistaken for.
func derHint(der []byte) string {
	if _, err := x509.ParsePKIXPublicKey(der); err == nil {
		return " (a public key: the DNS record's p= value)"
	}
	if _, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return " (an RSA public key)"
	}
	if _, err := x509.ParseCertificate(der); err == nil {
		return " (a certificate)"
	}
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return " (a PKCS#8 private key)"
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return " (a PKCS#1 RSA private key)"
	}
	return ""
}

// For returns the keys that sign for the normalised domain d: its own rows,
// else those of the nearest parent whose rows have Subdomains set, else
// those of the default domain ([milter.dkim] default_domain), which sign
// with d= the default domain.
func (t *Table) For(d string) []*Key {
	if t == nil {
		return nil
	}
	if ks := t.byDomain[d]; len(ks) > 0 {
		return ks
	}
	for p := d; ; {
		i := strings.IndexByte(p, '.')
		if i < 0 {
			return t.byDomain[t.defaultDomain]
		}
		p = p[i+1:]
		var out []*Key
		for _, k := range t.byDomain[p] {
			if k.Subdomains {
				out = append(out, k)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
}

// Len is the number of keys.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}
