package filter

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/d--j/go-milter"
	"go.uber.org/zap/zaptest"
)

// serveCounting serves f on a unix socket and counts the packets it
// writes.
func serveCounting(t *testing.T, f *Filter) (*milter.Client, *countingListener) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "m.sock"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := milter.NewServer(f.ServerOptions()...)
	go srv.Serve(cl)
	t.Cleanup(func() { srv.Close() })
	return milter.NewClient("unix", ln.Addr().String()), cl
}

// openSession opens a session with an MTA that offers every protocol option,
// as Postfix does with milter_protocol = 6, and sends CONNECT and HELO.
func openSession(t *testing.T, c *milter.Client, auth string) *milter.ClientSession {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	macros.Set(milter.MacroAuthAuthen, auth)
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Conn("client.example", milter.FamilyInet, 40000, "192.0.2.10"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo("client.example"); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRoundTrips: offered everything, the milter leaves out DATA and the
// replies to CONNECT, each header field and the end of header, and takes
// SMFIR_SKIP, so that a signed message costs the MTA four waits (MAIL,
// RCPT, the body, the end of message) instead of eight plus one per header
// field, and still comes back signed with signatures that verify; a
// message not signed skips its body after the first chunk.
func TestRoundTrips(t *testing.T) {
	f := New(state(t, nil), zaptest.NewLogger(t))
	c, cl := serveCounting(t, f)
	s := openSession(t, c, "alice")
	for _, o := range []milter.OptProtocol{milter.OptNoData, milter.OptNoConnReply, milter.OptNoHeaderReply, milter.OptNoEOHReply, milter.OptSkip} {
		if !s.ProtocolOption(o) {
			t.Errorf("%v not negotiated", o)
		}
	}
	for _, o := range []milter.OptProtocol{milter.OptNoMailReply, milter.OptNoRcptReply, milter.OptNoBodyReply} {
		if s.ProtocolOption(o) {
			t.Errorf("%v negotiated: we answer that stage", o)
		}
	}
	body := strings.Repeat("A line of a typical message body, about seventy characters long..\r\n", 60)
	s.Mail("<alice@example.org>", "")
	s.Rcpt("<bob@partner.mxd>", "")
	s.DataStart()
	for _, h := range benchHeader {
		s.HeaderField(h[0], h[1], nil)
	}
	s.HeaderEnd()
	mods, act, err := s.BodyReadFrom(strings.NewReader(body))
	if err != nil || act.Type != milter.ActionAccept || inserted(mods) != 2 {
		t.Fatalf("%d signatures, %+v, %v; want 2 signatures and accept", inserted(mods), act, err)
	}
	for _, v := range verify(t, rebuild(mods, benchHeader, body)) {
		if v.Err != nil {
			t.Errorf("%s: %v", v.Domain, v.Err)
		}
	}
	// optneg, MAIL, RCPT, body, two signatures, accept.
	if n := cl.n.Load(); n != 7 {
		t.Errorf("%d packets written for a signed message, want 7", n)
	}

	// Unauthenticated from a client outside the trusted networks: not
	// signed, and the body of 300 kB (five chunks) is skipped after one.
	cl.n.Store(0)
	s2 := openSession(t, c, "")
	if act, err := s2.Mail("<x@partner.mxd>", ""); err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("MAIL: %+v %v", act, err)
	}
	s2.Rcpt("<bob@example.org>", "")
	s2.DataStart()
	s2.HeaderField("From", " x@partner.mxd", nil)
	s2.HeaderEnd()
	mods, act, err = s2.BodyReadFrom(strings.NewReader(strings.Repeat("x", 300000)))
	if err != nil || act.Type != milter.ActionAccept || len(mods) != 0 {
		t.Fatalf("%+v, %+v, %v; want accept unchanged", mods, act, err)
	}
	// optneg, MAIL, RCPT, skip, accept.
	if n := cl.n.Load(); n != 5 {
		t.Errorf("%d packets written for an unsigned message, want 5", n)
	}
	if f.Stats().Signed.Load() != 1 || f.Stats().NotSigned.Load() != 1 {
		t.Errorf("signed %d, not signed %d; want 1 and 1", f.Stats().Signed.Load(), f.Stats().NotSigned.Load())
	}
}

// TestFailureWithoutReply: a signature that cannot start at the end of
// header, whose reply the MTA does not wait for, is answered at the body:
// accept unsigned, or tempfail if so configured.
func TestFailureWithoutReply(t *testing.T) {
	for _, tc := range []struct {
		onError string
		want    milter.ActionType
	}{{"accept", milter.ActionAccept}, {"tempfail", milter.ActionTempFail}} {
		st := state(t, func(fx *fixture) { fx.opts.TempfailOnError = tc.onError == "tempfail" })
		st.Sign.HeaderCanon = "bogus" // go-msgauth refuses it
		f := New(st, zaptest.NewLogger(t))
		c, _ := serveCounting(t, f)
		s := openSession(t, c, "alice")
		s.Mail("<alice@example.org>", "")
		s.Rcpt("<bob@partner.mxd>", "")
		s.DataStart()
		s.HeaderField("From", " alice@example.org", nil)
		if act, err := s.HeaderEnd(); err != nil || act.Type != milter.ActionContinue {
			t.Fatalf("end of header: %+v %v", act, err)
		}
		act, err := s.BodyChunk([]byte("hi\r\n"))
		if err != nil || act.Type != tc.want {
			t.Errorf("on_error %s: body answered %+v %v, want %v", tc.onError, act, err, tc.want)
		}
		if f.Stats().Errors.Load() != 1 || f.Stats().Signed.Load() != 0 {
			t.Errorf("on_error %s: %d errors, %d signed; want 1 and 0", tc.onError, f.Stats().Errors.Load(), f.Stats().Signed.Load())
		}
	}
}
