// Package mailauth reads what a domain publishes in DNS for mail
// authentication, for mxdetour-milter's doctor: DKIM key records (RFC 6376
// section 3.6.1, Ed25519 per RFC 8463), SPF (RFC 7208, evaluated by
// blitiri.com.ar/go/spf over internal/lookup) and DMARC (RFC 7489).
// Every lookup goes through a lookup.Resolver, so tests answer from
// internal/lookup/dnstest.
package mailauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeyRecord is a parsed DKIM key record (RFC 6376 section 3.6.1).
type KeyRecord struct {
	Version  string   // v=, "" when absent
	KeyType  string   // k=, "rsa" when absent
	Hashes   []string // h=, nil when absent (every hash)
	Services []string // s=, nil when absent ("*")
	Flags    []string // t=: "y" testing, "s" no subdomains in i=
	Key      crypto.PublicKey
}

// Testing says whether the record carries t=y: receivers then treat a
// failing signature as if the message were unsigned.
func (r *KeyRecord) Testing() bool { return hasFold(r.Flags, "y") }

// AllowsHash says whether the record lets the key sign with hash (such as
// "sha256").
func (r *KeyRecord) AllowsHash(hash string) bool { return r.Hashes == nil || hasFold(r.Hashes, hash) }

// Errors of ParseKeyRecord that a doctor explains differently.
var (
	ErrRevoked   = errors.New("the key is revoked (empty p=)")
	ErrTruncated = errors.New("the p= value is not a whole key: the record was truncated or cut when pasted")
)

// ParseKeyRecord parses the value of a key record, its character-strings
// already joined (a record longer than 255 bytes comes as several).
func ParseKeyRecord(txt string) (*KeyRecord, error) {
	tags, err := parseTags(txt)
	if err != nil {
		return nil, err
	}
	r := &KeyRecord{KeyType: "rsa"}
	if v, ok := tags["v"]; ok {
		if v != "DKIM1" {
			return nil, fmt.Errorf("v=%s: a key record's version is DKIM1", v)
		}
		r.Version = v
	}
	if v, ok := tags["k"]; ok {
		r.KeyType = strings.ToLower(v)
	}
	if v, ok := tags["h"]; ok {
		r.Hashes = splitList(v)
	}
	if v, ok := tags["s"]; ok {
		r.Services = splitList(v)
		if !hasFold(r.Services, "*") && !hasFold(r.Services, "email") {
			return nil, fmt.Errorf("s=%s: the key is not for email", v)
		}
	}
	if v, ok := tags["t"]; ok {
		r.Flags = splitList(v)
	}
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("no p= tag: the record holds no key")
	}
	if p == "" {
		return nil, ErrRevoked
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrTruncated, err)
	}
	switch r.KeyType {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			// Some publish the bare PKCS#1 key; verifiers accept it.
			if k, err2 := x509.ParsePKCS1PublicKey(raw); err2 == nil {
				pub = k
			} else {
				return nil, fmt.Errorf("%w (%v)", ErrTruncated, err)
			}
		}
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("k=rsa but p= holds a %T", pub)
		}
		r.Key = k
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w (%d bytes, an Ed25519 key has %d)", ErrTruncated, len(raw), ed25519.PublicKeySize)
		}
		r.Key = ed25519.PublicKey(raw)
	default:
		return nil, fmt.Errorf("k=%s: unknown key type (rsa or ed25519)", r.KeyType)
	}
	return r, nil
}

// parseTags reads a tag=value list (RFC 6376 section 3.2): whitespace
// around and inside values is dropped (base64 may be folded), a tag may
// appear once.
func parseTags(txt string) (map[string]string, error) {
	tags := map[string]string{}
	for _, part := range strings.Split(txt, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		name, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not tag=value", strings.TrimSpace(part))
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("tag %s= appears twice", name)
		}
		tags[name] = strings.Join(strings.Fields(v), "")
	}
	return tags, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ":") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func hasFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// SameKey says whether the public halves of a and b are one key.
func SameKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
