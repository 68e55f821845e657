package filter

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/d--j/go-milter"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/milter/pickup"
	"github.com/mxdetour/mxdetour/policyd/policy"
)

// fakePolicyd is policyd's policy socket, with its own request codec: it
// keeps what it was asked and answers with answer.
type fakePolicyd struct {
	mu     sync.Mutex
	asked  []policy.Request
	answer string
}

func (p *fakePolicyd) Policy(_ context.Context, r *policy.Request) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, *r)
	return p.answer
}

func (p *fakePolicyd) requests() []policy.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]policy.Request(nil), p.asked...)
}

func startPolicyd(t *testing.T, answer string) (*fakePolicyd, string) {
	p := &fakePolicyd{answer: answer}
	srv := policy.NewServer(p, policy.Options{}, zaptest.NewLogger(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return p, ln.Addr().String()
}

// countingFilter is a filter whose state asks policyd at addr about
// local accounts' mail.
func countingFilter(t *testing.T, addr string) *Filter {
	st := state(t, nil)
	c, err := pickup.NewCounter(addr, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	st.Pickup = c
	return New(st, zaptest.NewLogger(t))
}

// ours is the header Postfix's header_checks prepend to pickup's mail
// (README); run's cleanup messages have queue id 4DF209861DE.
var ours = [2]string{pickup.Header, " uid=0 id=4DF209861DE"}

func withHeader(first ...[2]string) [][2]string { return append(first, hdr...) }

func actions(mods []milter.ModifyAction, typ milter.ModifyActionType) []milter.ModifyAction {
	var out []milter.ModifyAction
	for _, m := range mods {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// A local account's message (cleanup's, Postfix's header first) is asked
// about once, at its end, with the account, the recipient count and
// domains; Postfix's header goes; a HOLD, DEFER or REJECT quarantines it
// with the limit's reason, and it is still signed.
func TestLocalUserAsked(t *testing.T) {
	for _, tc := range []struct{ answer, quarantine string }{
		{"DUNNO", ""},
		{"HOLD mxdetour: local_user limit exceeded (11/10 in 1h)", "mxdetour: local_user limit exceeded (11/10 in 1h)"},
		{"450 4.7.1 mxdetour: local_user limit exceeded (11/10 in 1h)", "mxdetour: local_user limit exceeded (11/10 in 1h)"},
	} {
		p, addr := startPolicyd(t, tc.answer)
		f := countingFilter(t, addr)
		o := run(t, serve(t, f), transaction{client: "127.0.0.1", auth: "x", rcpts: []string{"a@gmail.mxd", "b@gmail.mxd", "c@partner.mxd"},
			header: withHeader(ours), body: "hi\r\n"})[0]
		want := []policy.Request{{Request: "smtpd_access_policy", ProtocolState: "END-OF-MESSAGE", QueueID: "4DF209861DE",
			Instance: "mxdetour-milter.4DF209861DE", Sender: "sender@example.org", RecipientCount: 3, PolicyContext: "limits",
			LocalUser: "root", RecipientDomains: "gmail.mxd partner.mxd"}}
		if diff := cmp.Diff(want, p.requests(), cmpIgnoreRaw); diff != "" {
			t.Errorf("%s: asked (-want +got):\n%s", tc.answer, diff)
		}
		var q []milter.ModifyAction
		if tc.quarantine != "" {
			q = []milter.ModifyAction{{Type: milter.ActionQuarantine, Reason: tc.quarantine}}
		}
		if diff := cmp.Diff(q, actions(o.mods, milter.ActionQuarantine)); diff != "" {
			t.Errorf("%s: quarantine (-want +got):\n%s", tc.answer, diff)
		}
		del := []milter.ModifyAction{{Type: milter.ActionChangeHeader, HeaderIndex: 1, HeaderName: pickup.Header}}
		if diff := cmp.Diff(del, actions(o.mods, milter.ActionChangeHeader)); diff != "" {
			t.Errorf("%s: header deleted (-want +got):\n%s", tc.answer, diff)
		}
		if o.final.Type != milter.ActionAccept || inserted(o.mods) != 2 {
			t.Errorf("%s: final %v, %d signatures", tc.answer, o.final, inserted(o.mods))
		}
		st := f.Stats()
		if got := [3]uint64{st.LocalCounted.Load(), st.LocalHeld.Load(), st.LocalUncounted.Load()}; got != map[bool][3]uint64{true: {0, 1, 0}, false: {1, 0, 0}}[tc.quarantine != ""] {
			t.Errorf("%s: counted, held, uncounted: %v", tc.answer, got)
		}
	}
}

var cmpIgnoreRaw = cmp.FilterPath(func(p cmp.Path) bool {
	n := p.Last().String()
	return n == ".raw" || n == ".kept"
}, cmp.Ignore())

// Messages that are not a local account's are never asked about: smtpd's
// (with the header first or not, and smtpd on a unix socket, port 0 but
// {rcpt_mailer}), cleanup's whose first header is not Postfix's or names
// another queue id (forged). Every copy of the header is deleted.
func TestLocalUserNotAsked(t *testing.T) {
	p, addr := startPolicyd(t, "HOLD no")
	f := countingFilter(t, addr)
	a := serve(t, f)
	forged := [2]string{pickup.Header, " uid=1000 id=4DF209861DE"}
	for _, tc := range []struct {
		name    string
		tx      transaction
		deleted int
	}{
		{"smtpd", transaction{client: "198.51.100.7", auth: "alice", smtpd: true, header: withHeader(ours)}, 1},
		{"cleanup, not first", transaction{client: "127.0.0.1", header: append(withHeader(), forged)}, 1},
		{"cleanup, another queue id", transaction{client: "127.0.0.1", header: withHeader([2]string{pickup.Header, " uid=0 id=XYZ"})}, 1},
		{"cleanup, malformed", transaction{client: "127.0.0.1", header: withHeader([2]string{pickup.Header, " root"}, forged)}, 2},
		{"cleanup, none", transaction{client: "127.0.0.1", header: hdr}, 0},
	} {
		tc.tx.rcpts, tc.tx.body = []string{"a@gmail.mxd"}, "hi\r\n"
		o := run(t, a, tc.tx)[0]
		if q := actions(o.mods, milter.ActionQuarantine); len(q) > 0 {
			t.Errorf("%s: quarantined", tc.name)
		}
		if d := actions(o.mods, milter.ActionChangeHeader); len(d) != tc.deleted || (len(d) > 0 && int(d[0].HeaderIndex) != tc.deleted) {
			t.Errorf("%s: deletions %+v, want %d from the last", tc.name, d, tc.deleted)
		}
	}
	if r := p.requests(); len(r) != 0 {
		t.Errorf("asked %d times: %+v", len(r), r)
	}
	// smtpd on a unix socket: port 0 like cleanup, but smtpd's RCPT macros.
	addrU := serve(t, f)
	macros := milter.NewMacroBag()
	connectMacros(macros)
	s, err := milter.NewClient("tcp", addrU).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Conn("localhost", milter.FamilyUnix, 0, "")
	s.Helo("localhost")
	macros.Set(milter.MacroQueueId, "4DF209861DE")
	s.Mail("<sender@example.org>", "")
	rcptMacros(macros, true, "a@gmail.mxd")
	s.Rcpt("<a@gmail.mxd>", "")
	s.DataStart()
	s.HeaderField(ours[0], ours[1], nil)
	s.HeaderEnd()
	if _, _, err := s.BodyReadFrom(strings.NewReader("hi\r\n")); err != nil {
		t.Fatal(err)
	}
	if r := p.requests(); len(r) != 0 {
		t.Errorf("smtpd on a unix socket asked about: %+v", r)
	}
}

// policyd away: the message goes on, unsigned only if it would be anyway,
// uncounted, and counted as such.
func TestLocalUserPolicydAway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := countingFilter(t, addr)
	o := run(t, serve(t, f), transaction{client: "127.0.0.1", auth: "x", rcpts: []string{"a@gmail.mxd"}, header: withHeader(ours), body: "hi\r\n"})[0]
	if o.final.Type != milter.ActionAccept || len(actions(o.mods, milter.ActionQuarantine)) > 0 || inserted(o.mods) != 2 {
		t.Errorf("final %v, mods %+v", o.final, o.mods)
	}
	if f.Stats().LocalUncounted.Load() != 1 {
		t.Errorf("uncounted %d", f.Stats().LocalUncounted.Load())
	}
}
