package dkim

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"sync/atomic"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mxdetour/mxdetour/internal/domain"
)

// Options are the signing choices: the canonicalization of header and
// body ("relaxed" or "simple", RFC 6376 section 3.4), the header fields
// signed once if present, and those signed once more than present.
type Options struct {
	HeaderCanon, BodyCanon string
	Headers, Oversign      []string
}

// HeaderKeys returns the h= list for a message whose header field names
// are present: each configured name once per occurrence, and each name to
// oversign once more than it occurs (RFC 6376 section 8.15), so that a
// field added later breaks the signature. From is always signed.
func HeaderKeys(present []string, o Options) []string {
	// Linear scans rather than maps: a header has a few dozen fields and
	// this runs for every message signed.
	keys := make([]string, 0, len(present)+len(o.Oversign)+1)
	add := func(name string, extra int) {
		if containsFold(keys, name) {
			return
		}
		n := extra
		for _, p := range present {
			if strings.EqualFold(p, name) {
				n++
			}
		}
		for range n {
			keys = append(keys, name)
		}
	}
	add("From", 1)
	for _, n := range o.Headers {
		if containsFold(o.Oversign, n) {
			add(n, 1)
		} else {
			add(n, 0)
		}
	}
	for _, n := range o.Oversign {
		add(n, 1)
	}
	return keys
}

// containsFold reports whether list holds name, ignoring ASCII case.
func containsFold(list []string, name string) bool {
	for _, l := range list {
		if strings.EqualFold(l, name) {
			return true
		}
	}
	return false
}

// Signing is a signature in progress: the header was written at start,
// the body is written as it arrives, Finish returns the signatures. The
// body is never held in memory, so messages of any size are signed.
type Signing struct {
	keys    []*Key
	signers []*dkim.Signer
	w       io.Writer
	closed  bool
	aborted atomic.Bool // read by go-msgauth's goroutines, in abortable
}

// errAborted is what an aborted signature's key answers go-msgauth.
var errAborted = errors.New("dkim: signing aborted")

// abortable is the key go-msgauth signs with. go-msgauth's Signer has
// only Close, which hashes what it was given and then signs it: once the
// signing is aborted (a message ended early, or an end of headers
// repeated by a hostile client), Sign fails at once instead of spending
// an RSA or Ed25519 operation on a signature nobody will read.
type abortable struct {
	crypto.Signer
	aborted *atomic.Bool
}

func (a abortable) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if a.aborted.Load() {
		return nil, errAborted
	}
	return a.Signer.Sign(rand, digest, opts)
}

// Start begins signing a message whose header block is header (fields
// ending in CRLF or LF, without the blank line) and whose header field
// names are present, with every key of keys.
func Start(header []byte, present []string, keys []*Key, o Options, signingDomain string) (*Signing, error) {
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	s := &Signing{keys: keys}
	hk := HeaderKeys(present, o)
	ws := make([]io.Writer, 0, len(keys))
	for _, k := range keys {
		sg, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: signingDomain, Selector: k.Selector, Signer: abortable{k.Signer, &s.aborted},
			HeaderCanonicalization: dkim.Canonicalization(o.HeaderCanon),
			BodyCanonicalization:   dkim.Canonicalization(o.BodyCanon),
			HeaderKeys:             hk,
		})
		if err != nil {
			s.Abort()
			return nil, fmt.Errorf("dkim %s/%s: %w", signingDomain, k.Selector, err)
		}
		s.signers = append(s.signers, sg)
		ws = append(ws, sg)
	}
	s.w = io.MultiWriter(ws...)
	// One write, header and blank line: each write to a go-msgauth
	// Signer is a hand-over through a pipe to its goroutine.
	hb := make([]byte, 0, len(header)+2)
	hb = append(append(hb, header...), '\r', '\n')
	if _, err := s.w.Write(hb); err != nil {
		s.Abort()
		return nil, err
	}
	return s, nil
}

// Write feeds body bytes.
func (s *Signing) Write(p []byte) (int, error) { return s.w.Write(p) }

// Finish returns one DKIM-Signature header value per key (with its leading
// space, folded with CRLF and a tab), in key order.
func (s *Signing) Finish() ([]string, error) {
	s.closed = true
	var errs []error
	for _, sg := range s.signers {
		if err := sg.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := make([]string, len(s.signers))
	for i, sg := range s.signers {
		_, v, _ := strings.Cut(sg.Signature(), ":")
		out[i] = strings.TrimSuffix(v, "\r\n")
	}
	return out, nil
}

// Abort releases the signers without signing. go-msgauth runs a
// goroutine per signer until Close, so Abort closes every one; their keys
// refuse to sign by then (abortable), so Close costs the hashing of what
// was written, never a signature. Abort after Finish does nothing.
func (s *Signing) Abort() {
	if s.closed {
		return
	}
	s.closed = true
	s.aborted.Store(true)
	for _, sg := range s.signers {
		_ = sg.Close() // errAborted
	}
}

// Sign signs a whole message read from msg (header, blank line, body).
func Sign(msg io.Reader, keys []*Key, o Options, signingDomain string) ([]string, error) {
	data, err := io.ReadAll(msg)
	if err != nil {
		return nil, err
	}
	header, body := splitMessage(data)
	s, err := Start(header, fieldNames(header), keys, o, signingDomain)
	if err != nil {
		return nil, err
	}
	if _, err := s.Write(body); err != nil {
		s.Abort()
		return nil, err
	}
	return s.Finish()
}

func splitMessage(data []byte) (header, body []byte) {
	for _, sep := range [][]byte{[]byte("\r\n\r\n"), []byte("\n\n")} {
		if i := bytes.Index(data, sep); i >= 0 {
			return data[:i+len(sep)/2], data[i+len(sep):]
		}
	}
	return data, nil
}

func fieldNames(header []byte) []string {
	var names []string
	for _, l := range bytes.Split(header, []byte("\n")) {
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		if n, _, ok := bytes.Cut(l, []byte(":")); ok {
			names = append(names, string(bytes.TrimSpace(n)))
		}
	}
	return names
}

// FromDomain returns the normalised domain of the address in the values
// of the From header fields. Zero or several From fields, or several
// addresses in one, are errors: such a message is not signed (RFC 6376
// section 5.4, RFC 5322 section 3.6).
func FromDomain(fromValues []string) (string, error) {
	switch len(fromValues) {
	case 0:
		return "", errors.New("no From header field")
	case 1:
	default:
		return "", fmt.Errorf("message has %d From header fields", len(fromValues))
	}
	list, err := mail.ParseAddressList(strings.TrimSpace(fromValues[0]))
	if err != nil {
		return "", fmt.Errorf("unparsable From header %q: %w", fromValues[0], err)
	}
	if len(list) != 1 {
		return "", fmt.Errorf("the From header has %d addresses", len(list))
	}
	return domain.FromAddress(list[0].Address)
}
