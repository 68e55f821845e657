package filter

import (
	"bytes"
	"crypto"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	msgdkim "github.com/emersion/go-msgauth/dkim"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/geo/geotest"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
)

var (
	keyOnce   sync.Once
	rsaK, edK crypto.Signer
	keyDir    string
	rsaF, edF string
)

// keys writes an RSA and an Ed25519 key (mode 0600) once per test binary.
func keys(t testing.TB) []dkim.KeyRow {
	keyOnce.Do(func() {
		var err error
		keyDir, _ = os.MkdirTemp("", "filter-keys-")
		rsaK, _ = dkim.GenerateKey("rsa", 2048)
		edK, _ = dkim.GenerateKey("ed25519", 0)
		rsaF, edF = filepath.Join(keyDir, "rsa.key"), filepath.Join(keyDir, "ed.key")
		if err = dkim.WriteKeyFile(rsaF, rsaK); err == nil {
			err = dkim.WriteKeyFile(edF, edK)
		}
		if err != nil {
			panic(err)
		}
	})
	return []dkim.KeyRow{{Domain: "example.org", Selector: "rsa", KeyFile: rsaF}, {Domain: "example.org", Selector: "ed", KeyFile: edF}}
}

func countryDB(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "c.mmdb")
	geotest.WriteDB(t, p, time.Time{}, map[string]string{"203.0.113.0/24": "RU"})
	return p
}

// fixture is what a test may change before its state is built: the
// filter's options, the key rows, the signing options, and the country
// rules (a [milter.geo] section, mapped by internal/setup as the
// milter's set-up maps it).
type fixture struct {
	opts Options
	keys []dkim.KeyRow
	sign dkim.Options
	geo  config.Geo
}

// state builds the test state: the default configuration's choices, the
// two test keys, and a country block of RU with an allowed network.
func state(t testing.TB, mutate func(*fixture)) *State {
	d := config.Default()
	fx := &fixture{
		opts: Options{TrustedNetworks: d.Milter.TrustedNetworks, RejectReserved: d.Milter.RejectReserved, Reserved: d.Domains.Reserved,
			SignAuthenticated: d.Milter.DKIM.SignAuthenticated, SignTrusted: d.Milter.DKIM.SignTrusted},
		keys: keys(t),
		sign: dkim.Options{HeaderCanon: "relaxed", BodyCanon: "relaxed", Headers: d.Milter.DKIM.Headers, Oversign: d.Milter.DKIM.OversignHeaders},
		geo: config.Geo{BlockCountries: []string{"RU"}, Source: "mmdb", MMDBFile: countryDB(t),
			Allow: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")}},
	}
	if mutate != nil {
		mutate(fx)
	}
	tbl, _, err := dkim.LoadTable(fx.keys, false)
	if err != nil {
		t.Fatal(err)
	}
	src, err := geo.Open(setup.Geo(fx.geo), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &State{Opts: fx.opts, Keys: tbl, Sign: fx.sign, Geo: geo.NewBlocker(src, setup.GeoPolicy(fx.geo, nil))}
}

func serve(t *testing.T, f *Filter) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := milter.NewServer(f.ServerOptions()...)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// transaction is one message as Postfix 3.7.11 sends it: from smtpd, or
// (smtpd false) from cleanup for non_smtpd_milters (sendmail, pickup).
type transaction struct {
	client, auth string
	smtpd        bool
	rcpts        []string
	header       [][2]string
	body         string
}

// What Postfix 3.7.11 sent a milter (measured against a real instance
// with the default milter_*_macros; the client sends, as Postfix does,
// only those the filter asks for). smtpd: its client's real port, its own
// listening address as {daemon_addr}, all three RCPT macros. cleanup: the
// client "localhost", port 0, 127.0.0.1, also with {daemon_addr}
// 127.0.0.1; the queue ID from MAIL on; {rcpt_addr} but no {rcpt_host} or
// {rcpt_mailer}.
const (
	smtpdPort   = 54940
	cleanupPort = 0
)

func connectMacros(macros *milter.MacroBag) {
	macros.Set(milter.MacroMTAFQDN, "mta.example.net")
	macros.Set(milter.MacroDaemonName, "mta.example.net")
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	macros.Set(milter.MacroMTAVersion, "Postfix 3.7.11")
	macros.Set(milter.MacroRFC1413AuthInfo, "localhost [127.0.0.1]")
}

// rcptMacros sets the RCPT macros of rcpt (bare address) as smtpd sends
// them, or as cleanup does (macros of a cleanup session never hold the
// other two).
func rcptMacros(macros *milter.MacroBag, smtpd bool, rcpt string) {
	macros.Set(milter.MacroRcptAddr, rcpt)
	if smtpd {
		macros.Set(milter.MacroRcptHost, "[127.0.0.1]:2599")
		macros.Set(milter.MacroRcptMailer, "smtp")
	}
}

type outcome struct {
	mail  *milter.Action
	rcpt  map[string]*milter.Action
	mods  []milter.ModifyAction
	final *milter.Action
}

func run(t *testing.T, addr string, txs ...transaction) []outcome {
	macros := milter.NewMacroBag()
	connectMacros(macros)
	s, err := milter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	host, port := "client.example", uint16(smtpdPort)
	if !txs[0].smtpd {
		host, port = "localhost", cleanupPort
	}
	if _, err := s.Conn(host, milter.FamilyInet, port, txs[0].client); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo(host); err != nil {
		t.Fatal(err)
	}
	// smtpd passes the SMTP arguments, cleanup the bare addresses.
	angle := func(a string) string { return "<" + a + ">" }
	if !txs[0].smtpd {
		angle = func(a string) string { return a }
	}
	var outs []outcome
	for _, tx := range txs { // several messages in one SMTP session
		o := outcome{rcpt: map[string]*milter.Action{}}
		macros.Set(milter.MacroAuthAuthen, tx.auth)
		if !txs[0].smtpd {
			macros.Set(milter.MacroQueueId, "4DF209861DE")
		}
		o.mail, err = s.Mail(angle("sender@example.org"), "")
		if err != nil {
			t.Fatal(err)
		}
		if o.mail.StopProcessing() {
			outs = append(outs, o)
			continue
		}
		for _, r := range tx.rcpts {
			rcptMacros(macros, txs[0].smtpd, r)
			if o.rcpt[r], err = s.Rcpt(angle(r), ""); err != nil {
				t.Fatal(err)
			}
		}
		s.DataStart()
		for _, h := range tx.header {
			s.HeaderField(h[0], h[1], nil)
		}
		s.HeaderEnd()
		o.mods, o.final, err = s.BodyReadFrom(strings.NewReader(tx.body))
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, o)
	}
	return outs
}

var hdr = [][2]string{{"From", " Alice <alice@example.org>"}, {"To", " bob@partner.mxd"}, {"Subject", " a folded\n\tsubject"}, {"Date", " Mon, 24 Nov 2026 10:00:00 +0000"}}

// rebuild applies the InsertHeader actions to the message, as Postfix does.
func rebuild(mods []milter.ModifyAction, header [][2]string, body string) []byte {
	var b bytes.Buffer
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader {
			b.WriteString(m.HeaderName + ":" + strings.ReplaceAll(m.HeaderValue, "\n", "\r\n") + "\r\n")
		}
	}
	for _, h := range header {
		b.WriteString(h[0] + ":" + strings.ReplaceAll(h[1], "\n", "\r\n") + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.Bytes()
}

func verify(t *testing.T, msg []byte) []*msgdkim.Verification {
	txt := map[string]string{"rsa._domainkey.example.org": dkim.TXTRecord(rsaK.Public()), "ed._domainkey.example.org": dkim.TXTRecord(edK.Public())}
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: func(d string) ([]string, error) {
		if v, ok := txt[d]; ok {
			return []string{v}, nil
		}
		return nil, errors.New("nxdomain")
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func inserted(mods []milter.ModifyAction) int {
	n := 0
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader && m.HeaderName == "DKIM-Signature" && m.HeaderIndex == 1 {
			n++
		}
	}
	return n
}

func TestSigning(t *testing.T) {
	f := New(state(t, nil), zaptest.NewLogger(t))
	addr := serve(t, f)
	body := "Hello\r\nCaf\xc3\xa9\r\n" + strings.Repeat("x", 300000) + "\r\n"
	for _, tc := range []struct {
		name   string
		tx     transaction
		signed bool
	}{
		{"authenticated from outside", transaction{client: "198.51.100.7", auth: "alice", smtpd: true}, true},
		{"trusted network", transaction{client: "127.0.0.1", smtpd: true}, true},
		{"outside, unauthenticated", transaction{client: "198.51.100.8", smtpd: true}, false},
	} {
		tc.tx.rcpts, tc.tx.header, tc.tx.body = []string{"bob@partner.mxd"}, hdr, body
		o := run(t, addr, tc.tx)[0]
		if o.final.Type != milter.ActionAccept {
			t.Errorf("%s: final action %v", tc.name, o.final)
		}
		n := inserted(o.mods)
		if !tc.signed {
			if n != 0 {
				t.Errorf("%s: %d signatures, want none", tc.name, n)
			}
			continue
		}
		if n != 2 {
			t.Fatalf("%s: %d signatures inserted at index 1, want 2 (RSA and Ed25519)", tc.name, n)
		}
		vs := verify(t, rebuild(o.mods, hdr, body))
		if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
			t.Errorf("%s: verification %v %v", tc.name, vs[0].Err, vs[1].Err)
		}
	}
	if f.Stats().Signed.Load() != 2 || f.Stats().NotSigned.Load() != 1 {
		t.Errorf("stats signed %d not signed %d", f.Stats().Signed.Load(), f.Stats().NotSigned.Load())
	}
}

func TestTwoMessagesOneSession(t *testing.T) {
	addr := serve(t, New(state(t, nil), zaptest.NewLogger(t)))
	tx := transaction{client: "198.51.100.7", smtpd: true, rcpts: []string{"bob@partner.mxd"}, header: hdr, body: "one\r\n"}
	tx2 := tx
	tx2.auth = "alice"
	outs := run(t, addr, tx, tx2, tx)
	got := []int{inserted(outs[0].mods), inserted(outs[1].mods), inserted(outs[2].mods)}
	if got[0] != 0 || got[1] != 2 || got[2] != 0 {
		t.Errorf("signatures per message %v, want [0 2 0]: authentication is per message", got)
	}
}

func TestRejects(t *testing.T) {
	addr := serve(t, New(state(t, nil), zaptest.NewLogger(t)))
	o := run(t, addr, transaction{client: "198.51.100.7", smtpd: true, rcpts: []string{"a@Example.COM", "b@partner.mxd", "c@x.test"}, header: hdr, body: "x\r\n"})[0]
	if a := o.rcpt["a@Example.COM"]; a.Type != milter.ActionRejectWithCode || a.SMTPReply != "550 5.1.2 <a@Example.COM>: Recipient address rejected: example.com is a reserved domain and does not receive mail" {
		t.Errorf("reserved recipient: %+v", a)
	}
	if a := o.rcpt["b@partner.mxd"]; a.Type != milter.ActionContinue {
		t.Errorf("other recipient: %+v", a)
	}
	// Postfix's non-SMTP path cannot take RCPT rejects (TestNonSMTPD).
	o = run(t, addr, transaction{client: "127.0.0.1", rcpts: []string{"a@example.com"}, header: hdr, body: "x\r\n"})[0]
	if a := o.rcpt["a@example.com"]; a.Type != milter.ActionContinue {
		t.Errorf("non-smtpd reserved recipient: %+v", a)
	}
	for client, want := range map[string]string{"203.0.113.9": "reject", "203.0.113.200": "continue", "198.51.100.7": "continue"} {
		o = run(t, addr, transaction{client: client, smtpd: true, rcpts: []string{"b@partner.mxd"}, header: hdr, body: "x\r\n"})[0]
		got := "continue"
		if o.mail.Type == milter.ActionRejectWithCode {
			got = "reject"
			if o.mail.SMTPReply != "550 5.7.1 Client host rejected: mail from your country (RU) is not accepted here" {
				t.Errorf("reply %q", o.mail.SMTPReply)
			}
		}
		if got != want {
			t.Errorf("client %s: %s, want %s", client, got, want)
		}
	}
	o = run(t, addr, transaction{client: "203.0.113.9", auth: "roaming", smtpd: true, rcpts: []string{"b@partner.mxd"}, header: hdr, body: "x\r\n"})[0]
	if o.mail.Type != milter.ActionContinue {
		t.Errorf("authenticated client from a blocked country: %+v", o.mail)
	}
}

// TestNonSMTPD: Postfix cannot apply a reject at RCPT to the mail its
// cleanup submits (sendmail, pickup): it defers the message with "milter
// configuration error: can't reject recipient in non-smtpd(8) submission"
// and retries it every second. Such a reserved recipient must go on (the
// socketmap bounces it); smtpd's is refused. The values are what Postfix
// 3.7.11 sent (see transaction), and variations of them.
func TestNonSMTPD(t *testing.T) {
	addr := serve(t, New(state(t, nil), zaptest.NewLogger(t)))
	const rcpt = "user@example.org"
	type rcptMacro struct{ addr, host, mailer string }
	for _, tc := range []struct {
		name       string
		host       string
		port       uint16
		client     string
		daemonAddr string // "" = not sent
		rcptArg    string
		rcpt       *rcptMacro // nil = none sent
		reject     bool
	}{
		{"3.7.11 cleanup (sendmail, pickup)", "localhost", 0, "127.0.0.1", "127.0.0.1", rcpt,
			&rcptMacro{addr: rcpt}, false},
		{"3.7.11 smtpd, client on 127.0.0.1", "localhost", 54940, "127.0.0.1", "127.0.0.1", "<" + rcpt + ">",
			&rcptMacro{rcpt, "[127.0.0.1]:2599", "smtp"}, true},
		{"3.7.11 smtpd, remote client", "client.example", 41234, "198.51.100.7", "192.0.2.1", "<" + rcpt + ">",
			&rcptMacro{rcpt, "example.org", "smtp"}, true},
		// cleanup with the client attributes of its submitter (a real
		// port): only the RCPT macros tell.
		{"cleanup with a submitter's client port", "client.example", 41234, "198.51.100.7", "127.0.0.1", rcpt,
			&rcptMacro{addr: rcpt}, false},
		// no RCPT macros (asked for, not sent): the connect decides.
		{"port 0, no RCPT macros", "localhost", 0, "127.0.0.1", "127.0.0.1", rcpt, nil, false},
		{"older Postfix: no {daemon_addr}", "localhost", 0, "127.0.0.1", "", rcpt, nil, false},
		{"no {daemon_addr}, real port", "localhost", 41234, "127.0.0.1", "", rcpt, nil, false},
		{"smtpd, no RCPT macros", "client.example", 41234, "198.51.100.7", "192.0.2.1", "<" + rcpt + ">", nil, true},
		// a smtpd that says it is smtpd does not outweigh a cleanup-like connect.
		{"port 0 with smtpd's RCPT macros", "localhost", 0, "127.0.0.1", "127.0.0.1", rcpt,
			&rcptMacro{rcpt, "example.org", "smtp"}, false},
		// smtpd mail Postfix delivers itself (a host named under a
		// reserved domain): its own, never refused.
		{"smtpd, delivered locally", "client.example", 41234, "198.51.100.7", "192.0.2.1", "<" + rcpt + ">",
			&rcptMacro{rcpt, "example.org", "local"}, false},
		{"smtpd, virtual mailbox", "client.example", 41234, "198.51.100.7", "192.0.2.1", "<" + rcpt + ">",
			&rcptMacro{rcpt, "example.org", "virtual"}, false},
	} {
		macros := milter.NewMacroBag()
		connectMacros(macros)
		if tc.daemonAddr == "" {
			macros = milter.NewMacroBag()
			macros.Set(milter.MacroMTAFQDN, "mta.example.net")
			macros.Set(milter.MacroDaemonName, "mta.example.net")
		} else {
			macros.Set(milter.MacroDaemonAddr, tc.daemonAddr)
		}
		s, err := milter.NewClient("tcp", addr).Session(macros)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Conn(tc.host, milter.FamilyInet, tc.port, tc.client); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Helo(tc.host); err != nil {
			t.Fatal(err)
		}
		macros.Set(milter.MacroQueueId, "4DF209861DE")
		if a, err := s.Mail("sender@mta.example.net", ""); err != nil || a.Type != milter.ActionContinue {
			t.Fatalf("%s: MAIL %+v %v", tc.name, a, err)
		}
		if m := tc.rcpt; m != nil {
			macros.Set(milter.MacroRcptAddr, m.addr)
			if m.mailer != "" {
				macros.Set(milter.MacroRcptHost, m.host)
				macros.Set(milter.MacroRcptMailer, m.mailer)
			}
		}
		a, err := s.Rcpt(tc.rcptArg, "")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		switch {
		case tc.reject && (a.Type != milter.ActionRejectWithCode || !strings.HasPrefix(a.SMTPReply, "550 5.1.2 <user@example.org>: ")):
			t.Errorf("%s: RCPT %+v, want 550 5.1.2", tc.name, a)
		case !tc.reject && a.Type != milter.ActionContinue:
			t.Errorf("%s: RCPT %+v, want continue: Postfix cannot reject at RCPT here", tc.name, a)
		}
	}
}

func TestNotSigned(t *testing.T) {
	addr := serve(t, New(state(t, nil), zaptest.NewLogger(t)))
	for name, h := range map[string][][2]string{
		"no From":      {{"Subject", " x"}},
		"two From":     {{"From", " a@example.org"}, {"From", " b@example.org"}},
		"foreign From": {{"From", " a@example.net"}},
	} {
		o := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"b@partner.mxd"}, header: h, body: "x\r\n"})[0]
		if n := inserted(o.mods); n != 0 || o.final.Type != milter.ActionAccept {
			t.Errorf("%s: %d signatures, final %v", name, n, o.final)
		}
	}
}

func TestSwapKeepsWorking(t *testing.T) {
	f := New(state(t, nil), zaptest.NewLogger(t))
	addr := serve(t, f)
	f.Swap(state(t, func(fx *fixture) { fx.keys = fx.keys[:1] }))
	o := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"b@partner.mxd"}, header: hdr, body: "x\r\n"})[0]
	if n := inserted(o.mods); n != 1 {
		t.Errorf("after swap to one key: %d signatures", n)
	}
}

// A message that already carries our signature (re-injected after a
// content filter, forwarded, expanded by a list on this host) gets only
// the signatures it lacks: exactly one per key in the end.
func TestNoDoubleSigning(t *testing.T) {
	addr := serve(t, New(state(t, nil), zaptest.NewLogger(t)))
	body := "once\r\n"
	first := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"bob@partner.mxd"}, header: hdr, body: body})[0]
	if n := inserted(first.mods); n != 2 {
		t.Fatalf("first pass: %d signatures, want 2", n)
	}
	// The message as Postfix hands it on, then back in again.
	var signed [][2]string
	for _, m := range first.mods {
		signed = append(signed, [2]string{m.HeaderName, m.HeaderValue})
	}
	signed = append(signed, hdr...)
	again := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"bob@partner.mxd"}, header: signed, body: body})[0]
	if n := inserted(again.mods); n != 0 || again.final.Type != milter.ActionAccept {
		t.Errorf("second pass: %d more signatures, final %v; want none", n, again.final)
	}
	vs := verify(t, rebuild(nil, signed, body))
	if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Errorf("the first signatures no longer verify: %v", vs)
	}

	// Signed by one of our keys only (say, before the Ed25519 key was
	// added; selectors compare without case): the other key signs.
	var rsaOnly [][2]string
	for _, h := range signed {
		if h[0] == "DKIM-Signature" && strings.Contains(h[1], "s=ed;") {
			continue
		}
		if h[0] == "DKIM-Signature" {
			h[1] = strings.Replace(h[1], "s=rsa;", "s=RSA;", 1)
		}
		rsaOnly = append(rsaOnly, h)
	}
	third := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"bob@partner.mxd"}, header: rsaOnly, body: body})[0]
	if n := inserted(third.mods); n != 1 || !strings.Contains(third.mods[0].HeaderValue, "s=ed;") {
		t.Errorf("signed by the RSA key only: %d signatures added (%v), want the Ed25519 one", n, third.mods)
	}

	// Another domain's signature, or ours under another selector, is no reason to skip.
	foreign := append([][2]string{{"DKIM-Signature", " v=1; a=rsa-sha256; d=partner.mxd; s=rsa; bh=x; b=y"},
		{"DKIM-Signature", " v=1; a=rsa-sha256; d=example.org; s=old; bh=x; b=y"}}, hdr...)
	o := run(t, addr, transaction{client: "127.0.0.1", smtpd: true, rcpts: []string{"bob@partner.mxd"}, header: foreign, body: body})[0]
	if n := inserted(o.mods); n != 2 {
		t.Errorf("with a foreign signature: %d signatures, want 2", n)
	}
}
