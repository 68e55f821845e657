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
	"os"
	"strings"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/domain"
)

// Key is one row of the key table, with its private key loaded.
type Key struct {
	Domain, Selector, File string
	Subdomains             bool
	Signer                 crypto.Signer
	Algorithm              string // "rsa" or "ed25519"
	Bits                   int
}

// Table maps signing domains to their keys.
type Table struct {
	byDomain map[string][]*Key
	n        int
}

// LoadTable reads every key file of rows. A key file readable by group or
// others is refused unless allowGroupReadable (then only world-readable
// ones are). RSA keys under 1024 bits are refused, under 2048 accepted with
// a warning. All bad rows are reported at once.
func LoadTable(rows []config.DKIMKey, allowGroupReadable bool) (*Table, []string, error) {
	t := &Table{byDomain: map[string][]*Key{}}
	var warnings []string
	var errs []error
	for _, r := range rows {
		k, warn, err := loadKey(r, allowGroupReadable)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if warn != "" {
			warnings = append(warnings, warn)
		}
		t.byDomain[k.Domain] = append(t.byDomain[k.Domain], k)
		t.n++
	}
	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	return t, warnings, nil
}

func loadKey(r config.DKIMKey, allowGroupReadable bool) (*Key, string, error) {
	d, err := domain.Normalize(r.Domain)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %s: %w", r.KeyFile, err)
	}
	fi, err := os.Stat(r.KeyFile)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key for %s: %w", d, err)
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
		return nil, "", fmt.Errorf("dkim key for %s: %w", d, err)
	}
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %s: %w", r.KeyFile, err)
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

// ParsePrivateKey reads the key formats in use: PEM PKCS#8 (RSA or
// Ed25519, as openssl and opendkim-genkey write), PEM PKCS#1 RSA, and raw
// base64 Ed25519 keys of 64 bytes (rspamd) or a 32-byte seed (dkimpy).
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	if block, _ := pem.Decode(data); block != nil {
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return k, nil
			case ed25519.PrivateKey:
				return k, nil
			}
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		return nil, errors.New("PEM block is neither a PKCS#8 nor a PKCS#1 private key")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, errors.New("not a PEM private key, nor a base64 Ed25519 key")
	}
	switch len(raw) {
	case ed25519.PrivateKeySize:
		return ed25519.PrivateKey(raw), nil
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	}
	return nil, fmt.Errorf("base64 key of %d bytes is not an Ed25519 key", len(raw))
}

// For returns the keys that sign for the normalised domain d: its own rows,
// else those of the nearest parent whose rows have Subdomains set.
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
			return nil
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
