package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/postfix"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Issue #28: a hosting provider's domains, read from Postfix, get their
// keys from one `keygen -all` into key_dir; the milter signs for each of
// them, and a new customer is one more key file and a reload.

// postfixConfig writes a throwaway Postfix configuration directory whose
// virtual mailbox domains are those of a file of n customer domains,
// beside a relay domain, a reserved one and Postfix's localhost names.
func postfixConfig(t *testing.T, n int) (dir string, customers []string) {
	t.Helper()
	if _, err := postfix.Command("postconf"); err != nil {
		t.Skip("Postfix is not installed (Debian: postfix)")
	}
	dir = t.TempDir()
	for i := range n {
		customers = append(customers, fmt.Sprintf("customer%03d.zz", i))
	}
	list := filepath.Join(dir, "virtual_domains")
	os.WriteFile(list, []byte("# customers\n"+strings.Join(customers, "\n")+"\n"), 0o644)
	main := "myhostname = mx.hoster.zz\nmydomain = hoster.zz\nmyorigin = $mydomain\n" +
		"mydestination = $myhostname, localhost.$mydomain, localhost\n" +
		"virtual_mailbox_domains = " + list + "\nrelay_domains = relayed.zz, example.com\n"
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644)
	return dir, customers
}

// records reads keygen's zone-file output: the TXT value by name.
func records(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		name, _, ok := strings.Cut(l, ". IN TXT ")
		if !ok || strings.HasPrefix(l, ";") {
			continue
		}
		var b strings.Builder
		for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(l, -1) {
			b.WriteString(q[1])
		}
		m[name] = b.String()
	}
	return m
}

func keyFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode())
		}
	}
	return names
}

// TestKeygenAll: keys for exactly the domains that have none, RSA and
// Ed25519 by default, and every record printed.
func TestKeygenAll(t *testing.T) {
	pf, _ := postfixConfig(t, 3)
	dir := t.TempDir()
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o750)
	// customer000.zz has a row, customer001.zz a file: both are left alone.
	keygenIn(t, dir, "-domain", "customer000.zz", "-selector", "mail", "-algorithm", "ed25519", "-owner", "")
	keygenIn(t, keys, "-domain", "customer001.zz", "-selector", "old", "-algorithm", "ed25519", "-owner", "")
	more := filepath.Join(dir, "domains")
	os.WriteFile(more, []byte("# more customers\nExtra.ZZ   # upper case\n\ninvalid\n"), 0o644)
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[milter.dkim]\nkey_dir = %q\n[[milter.dkim.keys]]\ndomain = \"customer000.zz\"\nselector = \"mail\"\nkey_file = %q\n",
		keys, filepath.Join(dir, "customer000.zz.mail.key"))), 0o644)
	cmd := exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", pf, "-domains", more,
		"-rsa-selector", "r1", "-ed25519-selector", "e1", "-owner", "")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keygen -all: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	var want []string
	for _, d := range []string{"customer002.zz", "extra.zz", "hoster.zz", "mx.hoster.zz", "relayed.zz"} {
		want = append(want, d+".e1.key", d+".r1.key")
	}
	want = append(want, "customer001.zz.old.key")
	slices.Sort(want)
	got := keyFiles(t, keys)
	if !slices.Equal(want, got) {
		t.Errorf("key files:\n got %v\nwant %v", got, want)
	}
	recs := records(string(out))
	if len(recs) != 10 {
		t.Errorf("%d records printed, want 10", len(recs))
	}
	for _, name := range []string{"r1._domainkey.relayed.zz", "e1._domainkey.extra.zz"} {
		if !strings.HasPrefix(recs[name], "v=DKIM1; k=") {
			t.Errorf("no record for %s", name)
		}
	}
	for _, s := range []string{"skipped example.com", "skipped localhost.hoster.zz", "skipped localhost:", "skipped invalid",
		"has keys already: customer000.zz (mail of customer000.zz)", "has keys already: customer001.zz (old of customer001.zz)"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lacks %q", s)
		}
	}
	// Run again: nothing is missing, nothing is written.
	out, err = exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", pf, "-domains", more, "-owner", "").CombinedOutput()
	if err != nil || len(records(string(out))) != 0 || len(keyFiles(t, keys)) != 11 {
		t.Errorf("second run: %v, %d records, %d files\n%s", err, len(records(string(out))), len(keyFiles(t, keys)), out)
	}
}

// TestKeyDir300: 300 customer domains of a Postfix get their keys from
// keygen -all; the milter starts with them and signs each domain's mail
// (a sample, verified against the records keygen printed, served by
// DNS); a 301st customer is a keygen -all and a reload; a bad key file
// is reported and the others still sign.
func TestKeyDir300(t *testing.T) {
	pf, customers := postfixConfig(t, 300)
	dir := t.TempDir()
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o750)
	lport, mport := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[metrics]\nmilter_listen = \"127.0.0.1:%d\"\n[milter.dkim]\nkey_dir = %q\n",
		lport, mport, keys)), 0o644)
	// Ed25519 only, for speed: RSA keys from key_dir are tested in
	// milter/dkim and by TestKeygenAll.
	out, err := exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", pf, "-algorithms", "ed25519", "-owner", "").CombinedOutput()
	if err != nil {
		t.Fatalf("keygen -all: %v\n%s", err, out)
	}
	recs := records(string(out))
	if len(recs) != 303 { // the customers, hoster.zz, mx.hoster.zz, relayed.zz
		t.Fatalf("%d records, want 303", len(recs))
	}
	zone := dnstest.Zone{}
	for n, v := range recs {
		zone[n] = dnstest.Records{TXT: [][]string{{v}}}
	}
	srv := dnstest.New(t, zone)
	resolver, err := lookup.New(srv.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK (303 DKIM keys") {
		t.Errorf("-check-config: %v\n%s", err, out)
	}

	start := time.Now()
	p := daemontest.Start(t, exec.Command(bin, "-config", cfg))
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(addr) })
	t.Logf("start with 303 key files: %v (exec to accepting)", time.Since(start))
	if !strings.Contains(p.Output(), `"dkim_keys": 303`) && !strings.Contains(p.Output(), "dkim_keys\t303") && !regexp.MustCompile(`dkim_keys.{0,4}303`).MatchString(p.Output()) {
		t.Errorf("start does not log 303 keys:\n%s", p.Output())
	}
	for i := 0; i < len(customers); i += 29 {
		if got := verified(t, resolver, sendFrom(t, addr, customers[i])); !slices.Equal(got, []string{customers[i]}) {
			t.Errorf("%s: signatures verified %v", customers[i], got)
		}
	}

	// The 301st customer, and a broken key file beside it.
	more := filepath.Join(dir, "new")
	os.WriteFile(more, []byte("customer300.zz\n"), 0o644)
	out, err = exec.Command(bin, "keygen", "-all", "-config", cfg, "-postfix-config", "-", "-domains", more, "-algorithms", "ed25519", "-owner", "").CombinedOutput()
	if err != nil || len(records(string(out))) != 1 {
		t.Fatalf("keygen -all for the new customer: %v\n%s", err, out)
	}
	for n, v := range records(string(out)) {
		zone[n] = dnstest.Records{TXT: [][]string{{v}}}
	}
	srv = dnstest.New(t, zone)
	if resolver, err = lookup.New(srv.Options(), zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(keys, "broken.zz.ed1.key")
	os.WriteFile(broken, []byte("v=DKIM1; k=ed25519; p=AAAA\n"), 0o600)
	hup := time.Now()
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, "the reload", func() bool { return strings.Contains(p.Output(), "new keys and country data in use") })
	t.Logf("reload with 305 key files: %v (SIGHUP to the log line, polled every 10ms)", time.Since(hup))
	if out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput(); exitCode(err) != 78 || !strings.Contains(string(out), broken) {
		t.Errorf("-check-config with a broken file: %v, want 78 naming it\n%s", err, out)
	}
	for _, d := range []string{"customer300.zz", "customer299.zz", "relayed.zz"} {
		if got := verified(t, resolver, sendFrom(t, addr, d)); !slices.Equal(got, []string{d}) {
			t.Errorf("after the reload, %s: signatures verified %v", d, got)
		}
	}
	if !regexp.MustCompile(`\terror\t.*dkim key not loaded.*broken\.zz.*holds a DNS TXT record`).MatchString(p.Output()) {
		t.Errorf("the broken file is not logged at ERROR with its reason:\n%s", p.Output())
	}
	if m := scrape(t, mport); !strings.Contains(m, `mxdetour_milter_dkim_keys{state="loaded"} 304`) ||
		!strings.Contains(m, `mxdetour_milter_dkim_key{domain="broken.zz",selector="ed1",state="failed"} 1`) {
		t.Errorf("metrics:\n%s", m)
	}
	p.Stop(t)
}

// sendFrom passes a message from an address of d, from a trusted
// client, through the milter at addr, and returns it as Postfix would
// queue it.
func sendFrom(t *testing.T, addr, d string) []byte {
	t.Helper()
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := milter.NewClient("tcp", addr).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	must := func(_ *milter.Action, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	header := [][2]string{{"From", " Info <info@" + d + ">"}, {"To", " bob@partner.mxd"}, {"Subject", " hello from " + d}}
	must(s.Conn("client.example", milter.FamilyInet, 25, "127.0.0.1"))
	must(s.Helo("client.example"))
	must(s.Mail("<info@"+d+">", ""))
	must(s.Rcpt("<bob@partner.mxd>", ""))
	must(s.DataStart())
	for _, h := range header {
		must(s.HeaderField(h[0], h[1], nil))
	}
	must(s.HeaderEnd())
	mods, _, err := s.BodyReadFrom(strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	return queued(mods, header, testBody)
}

// TestKeygenNextInKeyDir: the next key of a rotation in key_dir takes
// the name key_file_template gives it, so the milter finds it.
func TestKeygenNextInKeyDir(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "dkim")
	os.Mkdir(keys, 0o750)
	keygenIn(t, dir, "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-owner", "")
	os.Rename(filepath.Join(dir, "example.org.ed.key"), filepath.Join(keys, "ed.example.org.pem"))
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[milter.dkim]\nkey_dir = %q\nkey_file_template = \"{selector}.{domain}.pem\"\n", keys)), 0o644)
	out := keygenIn(t, dir, "-next", "-domain", "example.org", "-config", cfg, "-owner", "")
	if _, err := os.Stat(filepath.Join(keys, "ed2.example.org.pem")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"no row to add", "keep the key file of ed:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK (2 DKIM keys") {
		t.Errorf("-check-config: %v\n%s", err, out)
	}
}

// TestDoctorKeyDir: the doctor checks the keys of key_dir as it checks
// rows, and names a missing record's fix.
func TestDoctorKeyDir(t *testing.T) {
	cfg, srv := doctorSetup(t)
	data, _ := os.ReadFile(cfg)
	text, _, _ := strings.Cut(string(data), "[[milter.dkim.keys]]")
	os.WriteFile(cfg, []byte(text+fmt.Sprintf("key_dir = %q\n", filepath.Dir(cfg))), 0o644) // under [milter.dkim]
	out, code := runDoctor(t, "-config", cfg)
	if code != 0 || !strings.HasPrefix(out, "DOCTOR OK: 0 critical, 0 warning, 5 ok\n") || !strings.Contains(out, "dkim ed._domainkey.example.org: published") {
		t.Errorf("all published: exit %d\n%s", code, out)
	}
	srv.Delete("ed._domainkey.example.org")
	out, code = runDoctor(t, "-config", cfg)
	if code != 2 || !strings.Contains(out, "fix: publish: ed._domainkey.example.org. IN TXT") {
		t.Errorf("missing record: exit %d\n%s", code, out)
	}
}

// TestDefaultDomainSigns: with default_domain, mail from a domain without
// keys leaves signed d= the default domain; without it, unsigned.
func TestDefaultDomainSigns(t *testing.T) {
	dir := t.TempDir()
	out := keygenIn(t, dir, "-domain", "hoster.zz", "-selector", "ed1", "-algorithm", "ed25519", "-owner", "")
	srv := dnstest.New(t, dnstest.Zone{"ed1._domainkey.hoster.zz": {TXT: [][]string{{records(out)["ed1._domainkey.hoster.zz"]}}}})
	resolver, err := lookup.New(srv.Options(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	lport := testutil.FreePort(t)
	cfg := filepath.Join(dir, "mxdetour.toml")
	write := func(extra string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[milter.dkim]\nkey_dir = %q\n%s", lport, dir, extra)), 0o644)
	}
	write("")
	p := daemontest.Start(t, exec.Command(bin, "-config", cfg))
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(addr) })
	if got := verified(t, resolver, sendFrom(t, addr, "customer.zz")); len(got) != 0 {
		t.Errorf("without default_domain: signed by %v", got)
	}
	write("default_domain = \"hoster.zz\"\n")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, "the reload", func() bool { return strings.Contains(p.Output(), "new keys and country data in use") })
	if got := verified(t, resolver, sendFrom(t, addr, "customer.zz")); !slices.Equal(got, []string{"hoster.zz"}) {
		t.Errorf("with default_domain: signatures verified %v, want hoster.zz's", got)
	}
	p.Stop(t)
}
