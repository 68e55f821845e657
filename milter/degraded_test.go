package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	msgdkim "github.com/emersion/go-msgauth/dkim"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/geo/geotest"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Issue #11, "degraded, not down": a milter whose configuration names a
// bad key starts with the keys that load, and keeps its other rules.

// keygenTXT runs keygen as a postmaster would and returns the key file
// and the TXT record it printed.
func keygenTXT(t *testing.T, dir, domain, selector, alg string) (file, txt string) {
	t.Helper()
	out, err := exec.Command(bin, "keygen", "-domain", domain, "-selector", selector, "-algorithm", alg, "-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " IN TXT ") {
			for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(l, -1) {
				b.WriteString(m[1])
			}
		}
	}
	return filepath.Join(dir, domain+"."+selector+".key"), b.String()
}

// countryDB writes a country database placing 203.0.113.0/24 in RU.
func countryDB(t *testing.T, dir string) string {
	p := filepath.Join(dir, "country.mmdb")
	geotest.WriteDB(t, p, time.Time{}, map[string]string{"203.0.113.0/24": "RU"})
	return p
}

// exchange is what the milter answered for one message.
type exchange struct {
	mail   *milter.Action
	rcpt   []*milter.Action
	signed []byte // the message as Postfix would queue it, signatures inserted
}

const testBody = "Hello,\r\nthe key that works still signs.\r\n"

var testHeader = [][2]string{{"From", " Alice <alice@example.org>"}, {"To", " bob@partner.mxd"}, {"Subject", " degraded"}}

// send passes one message from client through the milter at addr, as
// Postfix's smtpd does.
func send(t *testing.T, addr, client string, rcpts ...string) exchange {
	t.Helper()
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := milter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var x exchange
	must := func(a *milter.Action, err error) *milter.Action {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	must(s.Conn("client.example", milter.FamilyInet, 25, client))
	must(s.Helo("client.example"))
	if x.mail = must(s.Mail("<alice@example.org>", "")); x.mail.StopProcessing() {
		return x
	}
	for _, r := range rcpts {
		x.rcpt = append(x.rcpt, must(s.Rcpt("<"+r+">", "")))
	}
	must(s.DataStart())
	for _, h := range testHeader {
		must(s.HeaderField(h[0], h[1], nil))
	}
	must(s.HeaderEnd())
	mods, _, err := s.BodyReadFrom(strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	x.signed = queued(mods, testHeader, testBody)
	return x
}

// queued is the message as Postfix queues it after the milter: the
// headers the milter inserted, then header and body as sent.
func queued(mods []milter.ModifyAction, header [][2]string, body string) []byte {
	var b bytes.Buffer
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader {
			b.WriteString(m.HeaderName + ":" + strings.ReplaceAll(m.HeaderValue, "\n", "\r\n") + "\r\n")
		}
	}
	for _, h := range header {
		b.WriteString(h[0] + ":" + h[1] + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.Bytes()
}

// verified checks msg's signatures with go-msgauth, fetching keys from
// the test zone over DNS, and returns the d=/s= of those that pass.
func verified(t *testing.T, r lookup.Resolver, msg []byte) []string {
	t.Helper()
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		res := r.TXT(context.Background(), name)
		if res.Status != lookup.Answer {
			return nil, fmt.Errorf("%s: %v %v", name, res.Status, res.Err)
		}
		return res.TXT, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	var ok []string
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature d=%s does not verify: %v", v.Domain, v.Err)
			continue
		}
		ok = append(ok, v.Domain)
	}
	return ok
}

func scrape(t *testing.T, port int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// mappings counts the mappings of file in process pid's address space.
func mappings(t *testing.T, pid int, file string) int {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(maps), file+"\n")
}

// TestDegradedStart: with one good key and one bad (a public key put
// where the private key belongs), -check-config fails naming the bad
// one, and the daemon starts: it signs with the good key, refuses a
// reserved recipient and a blocked country, logs the bad key at ERROR and
// exports it. A reload that then breaks the good key's file keeps
// signing with the key loaded before; reloads leave one mapping of the
// country database.
func TestDegradedStart(t *testing.T) {
	dir := t.TempDir()
	good, goodTXT := keygenTXT(t, dir, "example.org", "rsa", "rsa")
	_, badTXT := keygenTXT(t, dir, "example.net", "bad", "ed25519")
	bad := filepath.Join(dir, "example.net.bad.pub")
	os.WriteFile(bad, []byte(badTXT[strings.Index(badTXT, "p=")+2:]+"\n"), 0o600)
	zone := dnstest.New(t, dnstest.Zone{"rsa._domainkey.example.org": {TXT: [][]string{{goodTXT}}}})
	resolver, err := lookup.New(zone.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	db := countryDB(t, dir)
	lport, mport := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[milter]
listen = "127.0.0.1:%d"
[milter.geo]
source = "mmdb"
mmdb_file = %q
block_countries = ["RU"]
[metrics]
milter_listen = "127.0.0.1:%d"
[[milter.dkim.keys]]
domain = "example.org"
selector = "rsa"
key_file = %q
[[milter.dkim.keys]]
domain = "example.net"
selector = "bad"
key_file = %q
`, lport, db, mport, good, bad)), 0o644)

	out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "dkim key "+bad+" holds a public key") || strings.Contains(string(out), good) {
		t.Errorf("-check-config: exit %d, want 78 naming %s alone:\n%s", code, bad, out)
	}

	p := daemontest.Start(t, exec.Command(bin, "-config", cfg))
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(addr) })

	x := send(t, addr, "127.0.0.1", "bob@partner.mxd", "nobody@example.com")
	if got := verified(t, resolver, x.signed); len(got) != 1 || got[0] != "example.org" {
		t.Errorf("signatures verified: %v, want example.org's", got)
	}
	if len(x.rcpt) != 2 || x.rcpt[0].Type != milter.ActionContinue || !strings.HasPrefix(x.rcpt[1].SMTPReply, "550 5.1.2 <nobody@example.com>") {
		t.Errorf("recipients: %+v, want the reserved one refused with 550 5.1.2", x.rcpt)
	}
	if x := send(t, addr, "203.0.113.9", "bob@partner.mxd"); !strings.HasPrefix(x.mail.SMTPReply, "550 5.7.1") {
		t.Errorf("client in a blocked country: %+v, want 550 5.7.1", x.mail)
	}
	log := p.Output()
	if !regexp.MustCompile(`\terror\t.*dkim key not loaded.*example\.net.*` + regexp.QuoteMeta(bad) + `.*holds a public key`).MatchString(log) {
		t.Errorf("the bad key is not logged at ERROR with its file and reason:\n%s", log)
	}
	metrics := scrape(t, mport)
	for _, want := range []string{
		`mxdetour_milter_dkim_keys{state="loaded"} 1`,
		`mxdetour_milter_dkim_keys{state="failed"} 1`,
		`mxdetour_milter_dkim_key{domain="example.net",selector="bad",state="failed"} 1`,
		`mxdetour_milter_dkim_key{domain="example.org",selector="rsa",state="loaded"} 1`,
		`mxdetour_milter_country_source{state="loaded"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	pid := p.Cmd.Process.Pid
	if n := mappings(t, pid, db); n != 1 {
		t.Errorf("the country database is mapped %d times at start, want 1", n)
	}

	// The good key's file is overwritten by mistake, then reloaded, three
	// times: the key in memory still signs, and each old mapping of the
	// country database is closed.
	os.WriteFile(good, []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"), 0o600)
	for i := range 3 {
		p.Cmd.Process.Signal(syscall.SIGHUP)
		testutil.Eventually(t, "the reload", func() bool { return strings.Count(p.Output(), "new keys and country data in use") == i+1 })
	}
	testutil.Eventually(t, "one mapping of the country database", func() bool { return mappings(t, pid, db) == 1 })
	if !strings.Contains(p.Output(), "still signing with the key loaded before") {
		t.Errorf("the kept key is not logged:\n%s", p.Output())
	}
	x = send(t, addr, "127.0.0.1", "bob@partner.mxd")
	if got := verified(t, resolver, x.signed); len(got) != 1 || got[0] != "example.org" {
		t.Errorf("after the reload: signatures verified %v, want example.org's by the key loaded before", got)
	}
	if m := scrape(t, mport); !strings.Contains(m, `mxdetour_milter_dkim_key{domain="example.org",selector="rsa",state="kept"} 1`) {
		t.Errorf("the kept key is not in the metrics:\n%s", m)
	}
	out, err = exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "2 problem(s)") || !strings.Contains(string(out), good) {
		t.Errorf("-check-config after the break: exit %d, want 78 naming both keys:\n%s", code, out)
	}
	p.Stop(t)
}
