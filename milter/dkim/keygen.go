package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// GenerateKey makes a new key: "rsa" (bits, at least 1024) or "ed25519".
func GenerateKey(algorithm string, bits int) (crypto.Signer, error) {
	switch algorithm {
	case "rsa":
		if bits < 1024 {
			return nil, fmt.Errorf("RSA keys need at least 1024 bits (2048 recommended), not %d", bits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown algorithm %q: use rsa or ed25519", algorithm)
}

// MarshalPrivateKey encodes k as PEM PKCS#8.
func MarshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteKeyFile writes k to path with mode 0600; it never overwrites.
func WriteKeyFile(path string, k crypto.Signer) error {
	data, err := MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TXTRecord is the DNS TXT value publishing pub (RFC 6376 section 3.6.1;
// for Ed25519 the raw 32-byte key, RFC 8463 section 4).
func TXTRecord(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(p)
	case *rsa.PublicKey:
		der, _ := x509.MarshalPKIXPublicKey(p)
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
	return ""
}

// ZoneLine is a zone-file line for the record, its value split into
// quoted strings of at most 255 bytes as DNS requires.
func ZoneLine(selector, domain string, pub crypto.PublicKey) string {
	txt := TXTRecord(pub)
	var parts []string
	for len(txt) > 0 {
		n := min(len(txt), 250)
		parts = append(parts, `"`+txt[:n]+`"`)
		txt = txt[n:]
	}
	return fmt.Sprintf("%s._domainkey.%s. IN TXT ( %s )", selector, strings.TrimSuffix(domain, "."), strings.Join(parts, " "))
}
