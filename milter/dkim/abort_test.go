package dkim

import (
	"crypto"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// counting is a key that counts the signatures asked of it.
type counting struct {
	crypto.Signer
	calls atomic.Int64
}

func (c *counting) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.calls.Add(1)
	return c.Signer.Sign(rand, digest, opts)
}

var abortMsg = crlf("From: alice@example.org\nTo: bob@example.net\nSubject: abort\n\n" + strings.Repeat("A typical line of a typical message body.\n", 240))

// start begins signing abortMsg with keys and feeds it the body.
func start(tb testing.TB, keys []*Key) *Signing {
	tb.Helper()
	header, body := splitMessage([]byte(abortMsg))
	s, err := Start(header, fieldNames(header), keys, defaultOptions(), "example.org")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Write(body); err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestAbortSignsNothing: an aborted signature asks its keys for no
// signature, and its go-msgauth goroutines end; a finished one asks once
// per key.
func TestAbortSignsNothing(t *testing.T) {
	r, e := testKeys(t)
	cr, ce := &counting{Signer: r.Signer}, &counting{Signer: e.Signer}
	keys := []*Key{{Domain: "example.org", Selector: "rsa", Signer: cr}, {Domain: "example.org", Selector: "ed", Signer: ce}}
	before := runtime.NumGoroutine()
	for range 50 { // a client repeating the end of headers
		start(t, keys).Abort()
	}
	if n, m := cr.calls.Load(), ce.calls.Load(); n != 0 || m != 0 {
		t.Errorf("50 aborted signatures cost %d RSA and %d Ed25519 signatures, want none", n, m)
	}
	testutil.Eventually(t, "the goroutines back to their number before (a signer not closed?)", func() bool { return runtime.NumGoroutine() <= before })
	s := start(t, keys)
	sigs, err := s.Finish()
	if err != nil || len(sigs) != 2 {
		t.Fatalf("Finish: %v, %d signatures", err, len(sigs))
	}
	if n, m := cr.calls.Load(), ce.calls.Load(); n != 1 || m != 1 {
		t.Errorf("a finished signature: %d RSA and %d Ed25519 signatures, want 1 each", n, m)
	}
	s.Abort() // after Finish: nothing happens
	vs := verifyGo(t, []byte("DKIM-Signature:"+sigs[0]+"\r\nDKIM-Signature:"+sigs[1]+"\r\n"+abortMsg), txtMap(r, e))
	if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Errorf("the signatures made through the wrapper do not verify: %v", vs)
	}
}

// BenchmarkAbortRSA2048 is the cost of a signature begun and aborted
// (hashing only); compare BenchmarkFinishRSA2048, which signs.
func BenchmarkAbortRSA2048(b *testing.B) {
	r, _ := testKeys(b)
	c := &counting{Signer: r.Signer}
	keys := []*Key{{Domain: "example.org", Selector: "rsa", Signer: c}}
	b.ReportAllocs()
	for b.Loop() {
		start(b, keys).Abort()
	}
	b.ReportMetric(float64(c.calls.Load())/float64(b.N), "signatures/op")
}

func BenchmarkFinishRSA2048(b *testing.B) {
	r, _ := testKeys(b)
	c := &counting{Signer: r.Signer}
	keys := []*Key{{Domain: "example.org", Selector: "rsa", Signer: c}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := start(b, keys).Finish(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.calls.Load())/float64(b.N), "signatures/op")
}
