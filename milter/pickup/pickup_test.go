package pickup

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/policy"
)

func TestParseHeader(t *testing.T) {
	type res struct {
		UID uint32
		ID  string
		OK  bool
	}
	for in, want := range map[string]res{
		" uid=1000 id=4XyZ1234":     {1000, "4XyZ1234", true},
		"uid=0 id=C319E988007":      {0, "C319E988007", true},
		" uid=33 id=4XyZ\r\n":       {33, "4XyZ", true},
		" uid=-1 id=x":              {},
		" uid=4294967296 id=x":      {},
		" uid=1 id=":                {},
		" uid=1":                    {},
		" id=x uid=1":               {},
		" uid=1 id=a b":             {},
		" root":                     {},
		" uid=12345678901234 id=Q1": {},
	} {
		uid, id, ok := ParseHeader(in)
		if got := (res{uid, id, ok}); got != want {
			t.Errorf("ParseHeader(%q) = %+v, want %+v", in, got, want)
		}
	}
}

// The header_checks line, as a Go regexp (POSIX classes are the same),
// makes the header ParseHeader reads out of pickup's Received: header as
// Postfix 3.7.11 writes it and a header_checks table sees it (the
// continuation line joined with its newline), and nothing out of smtpd's.
func TestHeaderChecksLine(t *testing.T) {
	f := strings.Split(HeaderChecks, "/")
	re := regexp.MustCompile(strings.Join(f[1:len(f)-1], "/"))
	action := strings.TrimPrefix(f[len(f)-1], " PREPEND ")
	for in, want := range map[string]string{
		"Received: by mta.example.net (Postfix, from userid 33)\n\tid 4dQ7bK1Zc3z9rxN; Tue,  8 Dec 2026 00:12:43 +0000 (UTC)": Header + ": uid=33 id=4dQ7bK1Zc3z9rxN",
		"Received: by mta.example.net (Postfix, from userid 0)\tid C319E988007; Tue,  8 Dec 2026 00:12:43 +0000 (UTC)":        Header + ": uid=0 id=C319E988007",
		"Received: from client.example (client.example [192.0.2.1])\n\tby mta.example.net (Postfix) with ESMTPSA id 4dQ":      "",
		"X-Received: by mta.example.net (Postfix, from userid 0)\n\tid C1; x":                                                 "",
	} {
		m := re.FindStringSubmatchIndex(in)
		got := ""
		if m != nil {
			got = string(re.ExpandString(nil, action, in, m))
		}
		if got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
		if got != "" {
			if _, _, ok := ParseHeader(strings.TrimPrefix(got, Header+":")); !ok {
				t.Errorf("%q: ParseHeader cannot read it", got)
			}
		}
	}
}

func TestRefusal(t *testing.T) {
	type res struct {
		Reason  string
		Refused bool
	}
	for in, want := range map[string]res{
		"DUNNO": {}, "OK": {}, "": {}, "FILTER relay:[x]": {}, "PREPEND X: y": {},
		"HOLD mxdetour: local_user limit exceeded (11/10 in 1h)":      {"mxdetour: local_user limit exceeded (11/10 in 1h)", true},
		"450 4.7.1 mxdetour: local_user limit exceeded (11/10 in 1h)": {"mxdetour: local_user limit exceeded (11/10 in 1h)", true},
		"550 5.7.1 mxdetour: x": {"mxdetour: x", true},
		"554 no":                {"no", true},
		"DEFER later":           {"later", true},
		"reject":                {"mxdetour: limit exceeded", true},
		"250 fine":              {},
		"4xx no":                {},
	} {
		r, ok := Refusal(in)
		if got := (res{r, ok}); got != want {
			t.Errorf("Refusal(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestUsers(t *testing.T) {
	now := time.Unix(1e9, 0)
	lookups := 0
	u := Users{now: func() time.Time { return now }, lookup: func(uid string) (*user.User, error) {
		lookups++
		if uid == "33" {
			return &user.User{Uid: uid, Username: "www-data"}, nil
		}
		return nil, user.UnknownUserIdError(0)
	}}
	for range 3 {
		if got := u.Name(33); got != "www-data" {
			t.Errorf("33: %q", got)
		}
		if got := u.Name(4242); got != "uid:4242" {
			t.Errorf("4242: %q", got)
		}
	}
	if lookups != 2 {
		t.Errorf("%d lookups, want 2 (cached)", lookups)
	}
	now = now.Add(2 * userTTL)
	u.Name(33)
	if lookups != 3 {
		t.Errorf("%d lookups, want 3 (expired)", lookups)
	}
	// The real account database: root is uid 0 everywhere.
	if got := (&Users{}).Name(0); got != "root" {
		t.Errorf("uid 0: %q", got)
	}
}

// policydStub answers requests read with policyd's codec, after delay;
// it can close every connection after its first answer, as a policyd
// whose idle timeout passed.
type policydStub struct {
	answer     string
	delay      time.Duration
	closeAfter bool
	asked      atomic.Int32
	conns      atomic.Int32
	closed     atomic.Int32 // connections the stub closed
}

func (p *policydStub) serve(t *testing.T, network, addr string) string {
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go func() {
				defer func() { c.Close(); p.closed.Add(1) }()
				br := bufio.NewReader(c)
				var req policy.Request
				for policy.ReadRequest(br, &req, 4096) == nil {
					p.asked.Add(1)
					time.Sleep(p.delay)
					if _, err := c.Write([]byte("action=" + p.answer + "\n\n")); err != nil || p.closeAfter {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestCounter(t *testing.T, addr string, log *zap.Logger) *Counter {
	c, err := NewCounter(addr, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func msg(id string) *Message {
	return &Message{QueueID: id, Sender: "root@example.net", Recipients: 1, Domains: []string{"gmail.com"}, Header: " uid=0 id=" + id}
}

// One connection serves request after request; one that policyd closed
// while idle is replaced without losing the request.
func TestClientConnections(t *testing.T) {
	for _, closeAfter := range []bool{false, true} {
		p := &policydStub{answer: "HOLD mxdetour: x", closeAfter: closeAfter}
		c := newTestCounter(t, p.serve(t, "tcp", "127.0.0.1:0"), zaptest.NewLogger(t))
		for i := range 5 {
			if out := c.Count(msg("Q" + string(rune('A'+i)))); !out.Counted || out.Held != "mxdetour: x" || out.LocalUser != "root" {
				t.Fatalf("closeAfter %v: %+v", closeAfter, out)
			}
			if closeAfter { // the connection closed before the next request
				testutil.Eventually(t, "the stub closing its connection", func() bool { return p.closed.Load() == int32(i+1) })
			}
		}
		if want := map[bool]int32{false: 1, true: 5}[closeAfter]; p.conns.Load() != want || p.asked.Load() != 5 {
			t.Errorf("closeAfter %v: %d connections for %d requests, want %d", closeAfter, p.conns.Load(), p.asked.Load(), want)
		}
	}
}

// A unix socket, as policyd.policy_listen = "unix:/path" says.
func TestClientUnix(t *testing.T) {
	p := &policydStub{answer: "DUNNO"}
	path := t.TempDir() + "/policy.sock"
	p.serve(t, "unix", path)
	c := newTestCounter(t, "unix:"+path, zaptest.NewLogger(t))
	if out := c.Count(msg("Q1")); !out.Counted || out.Held != "" {
		t.Errorf("%+v", out)
	}
	if _, err := NewClient("localhost"); err == nil {
		t.Error("an address without a port taken")
	}
}

// A slow or absent policyd: the message goes on uncounted within the
// timeout, and the warning is logged once however many messages wait.
func TestFailOpen(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	p := &policydStub{answer: "HOLD x", delay: 2 * time.Second}
	c := newTestCounter(t, p.serve(t, "tcp", "127.0.0.1:0"), zap.New(core))
	c.timeout = 200 * time.Millisecond
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			start := time.Now()
			out := c.Count(msg("S" + string(rune('A'+i))))
			if out.Counted || out.Held != "" || out.LocalUser != "root" {
				t.Errorf("slow policyd: %+v", out)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("slow policyd: waited %v", took)
			}
		})
	}
	wg.Wait()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	c2 := newTestCounter(t, gone, zap.New(core))
	if out := c2.Count(msg("G1")); out.Counted {
		t.Errorf("absent policyd: %+v", out)
	}
	warned := logs.FilterMessageSnippet("not asked in time").All()
	if len(warned) != 2 { // one per counter
		t.Errorf("%d warnings, want 2: %+v", len(warned), warned)
	}
}

// What is not counted, and is not asked about: a message without
// Postfix's header, with another queue id's, or of Postfix's own account
// (requeued with postsuper -r).
func TestNotAsked(t *testing.T) {
	p := &policydStub{answer: "HOLD x"}
	c := newTestCounter(t, p.serve(t, "tcp", "127.0.0.1:0"), zaptest.NewLogger(t))
	c.users.lookup = func(uid string) (*user.User, error) {
		if uid == "102" {
			return &user.User{Username: MailOwner}, nil
		}
		return nil, errors.New("none")
	}
	for _, m := range []*Message{
		{QueueID: "Q1"},
		{QueueID: "Q1", Header: " uid=0 id=Q2"},
		{QueueID: "Q1", Header: "junk"},
	} {
		if out := c.Count(m); out != (Outcome{}) {
			t.Errorf("%+v: %+v", m, out)
		}
	}
	if out := c.Count(&Message{QueueID: "Q1", Header: " uid=102 id=Q1"}); out != (Outcome{LocalUser: MailOwner}) {
		t.Errorf("requeued: %+v", out)
	}
	if n := p.asked.Load(); n != 0 {
		t.Errorf("asked %d times", n)
	}
}

// The request is what policyd's codec reads, with values cut at a line
// break (the protocol cannot carry one).
func TestEncode(t *testing.T) {
	b := encode(&Request{QueueID: "Q1", Sender: "a@b.example\nrecipient=x@evil.example", LocalUser: "www-data",
		Recipients: 3, Domains: []string{"gmail.com", "example.org"}})
	var got policy.Request
	if err := policy.ReadRequest(bufio.NewReader(strings.NewReader(string(b))), &got, 4096); err != nil {
		t.Fatal(err)
	}
	want := policy.Request{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE", QueueID: "Q1",
		Instance: "mxdetour-milter.Q1", Sender: "a@b.example", RecipientCount: 3, PolicyContext: "limits",
		LocalUser: "www-data", RecipientDomains: "gmail.com example.org"}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool {
		n := p.Last().String()
		return n == ".raw" || n == ".kept"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// README gives the header_checks line to copy, and contrib/postfix/main.cf
// shows it: it must be this one (policyd/wire writes this one).
func TestREADMELine(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n"+HeaderChecks+"\n") {
		t.Errorf("README.md lacks the header_checks line\n%s", HeaderChecks)
	}
	if b, err = os.ReadFile("../../contrib/postfix/main.cf"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n# "+HeaderChecks+"\n") {
		t.Errorf("contrib/postfix/main.cf lacks the header_checks line, commented\n# %s", HeaderChecks)
	}
}

// A header value comes from a message (a forged one, from its
// submitter): whatever it is, ParseHeader reads it without panicking, and
// what it reads is what Postfix's header_checks line would write.
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{" uid=1000 id=4XyZ1234", " uid=0 id=C319E988007", " root", "uid= id=", " uid=1 id=a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		uid, id, ok := ParseHeader(v)
		if !ok {
			return
		}
		again := " uid=" + strconv.FormatUint(uint64(uid), 10) + " id=" + id
		if u2, id2, ok2 := ParseHeader(again); !ok2 || u2 != uid || id2 != id {
			t.Errorf("%q read as uid %d id %q; written again %q reads %d %q %v", v, uid, id, again, u2, id2, ok2)
		}
	})
}
