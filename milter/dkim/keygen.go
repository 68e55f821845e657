package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
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

// ReplaceKeyFile writes k over the key file at path, atomically: a new
// file (mode 0600, hidden from key_dir by its leading dot) renamed over
// it, so the milter reads the old key or the new one, never half of one.
// The owner is the writer's; Chown gives it away.
func ReplaceKeyFile(path string, k crypto.Signer) error {
	data, err := MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename: nothing left to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
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

// DaemonUser is the user the packaged units run the milter as.
const DaemonUser = "mxdetour"

// DefaultOwner is whom keygen gives a new key file to: the daemon's user
// when we run as root and that user exists, else nobody (the file stays
// ours).
func DefaultOwner() string {
	if os.Geteuid() != 0 {
		return ""
	}
	if _, err := user.Lookup(DaemonUser); err != nil {
		return ""
	}
	return DaemonUser
}

// Chown gives path to the user name (and that user's primary group).
func Chown(path, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("owner %q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("owner %q: ids %q:%q are not numbers", name, u.Uid, u.Gid)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s %s: %w", name, path, err)
	}
	return nil
}

// ReadHint is the advice to add to the error of reading a key file:
// when we may not read it, which chown mends it. Key files written by
// keygen as root belong to root, mode 0600, and the milter runs as
// mxdetour.
func ReadHint(path string, err error) string {
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	who := DaemonUser
	if u, uerr := user.Current(); uerr == nil && u.Uid != "0" {
		who = u.Username
	}
	return fmt.Sprintf(" (the milter runs as %s: chown %s %s, keep mode 0600)", who, who, path)
}

// NewKey is a key to generate for keygen -all.
type NewKey struct {
	Domain, Selector, Algorithm string
	Bits                        int
	Signer                      crypto.Signer // set by GenerateKeys
}

// GenerateKeys generates every key of ks, on all CPUs: an RSA key takes
// tens of milliseconds, and a hosting provider has hundreds of domains.
func GenerateKeys(ks []NewKey) error {
	errs := make([]error, len(ks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range ks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ks[i].Signer, errs[i] = GenerateKey(ks[i].Algorithm, ks[i].Bits)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
