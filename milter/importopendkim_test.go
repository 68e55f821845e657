package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/server"
)

// genkey makes a key as an OpenDKIM site did, with opendkim-genkey, and
// returns the key file and the record it told the postmaster to publish.
func genkey(t *testing.T, dir, domain, selector string) (keyFile, record string) {
	kd := filepath.Join(dir, "keys", domain)
	os.MkdirAll(kd, 0o700)
	if out, err := exec.Command("opendkim-genkey", "-b", "2048", "-d", domain, "-s", selector, "-D", kd).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	txt, err := os.ReadFile(filepath.Join(kd, selector+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(txt), -1) {
		parts = append(parts, m[1])
	}
	return filepath.Join(kd, selector+".private"), strings.Join(parts, "")
}

// TestImportOpenDKIM: a Debian OpenDKIM setup (opendkim.conf(5) with
// KeyTable, a refile: SigningTable, InternalHosts and ExternalIgnoreList,
// keys from opendkim-genkey) becomes a configuration the milter loads,
// whose signatures dkimpy verifies against the records already published.
func TestImportOpenDKIM(t *testing.T) {
	if _, err := exec.LookPath("opendkim-genkey"); err != nil {
		t.Skip("opendkim-genkey (Debian's opendkim-tools) is not installed; .ci/run installs it")
	}
	dir := t.TempDir()
	comKey, comTXT := genkey(t, dir, "example.com", "mail")
	netKey, netTXT := genkey(t, dir, "example.net", "2020")
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	write("KeyTable", fmt.Sprintf("# name  domain:selector:keyfile\nmail._domainkey.example.com example.com:mail:%s\n2020._domainkey.example.net %%:2020:%s\n", comKey, netKey))
	write("SigningTable", "*@example.com mail._domainkey.example.com\n*@*.example.net 2020._domainkey.example.net\n*@example.net 2020._domainkey.example.net\npresident@example.org mail._domainkey.example.com\n")
	write("TrustedHosts", "127.0.0.1\n::1\nlocalhost\n192.168.1.0/24\n10.1.2.3\nbackup.example.com\n")
	write("ExternalIgnoreList", "relay.partner.example\n")
	port := testutil.FreePort(t)
	conf := write("opendkim.conf", fmt.Sprintf(`# As Debian ships it, with tables
Syslog			yes
SyslogSuccess		yes
Canonicalization	relaxed/simple
Mode			sv
OversignHeaders		From
UserID			opendkim
UMask			007
Socket			inet:%d@localhost
PidFile			/run/opendkim/opendkim.pid
TrustAnchorFile		/usr/share/dns/root.key
KeyTable		file:%s/KeyTable
SigningTable		refile:%s/SigningTable
InternalHosts		refile:%s/TrustedHosts
ExternalIgnoreList	refile:%s/ExternalIgnoreList
`, port, dir, dir, dir, dir))

	var stdout, stderr bytes.Buffer
	if code := run([]string{"import-opendkim", conf}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		fmt.Sprintf("listen = \"127.0.0.1:%d\"", port),
		`socket_mode = "0660"`,
		`trusted_networks = ["127.0.0.1/32", "::1/128", "192.168.1.0/24", "10.1.2.3/32"]`,
		`canonicalization = "relaxed/simple"`,
		`oversign_headers = ["From"]`,
		fmt.Sprintf("domain = \"example.com\"\nselector = \"mail\"\nkey_file = %q\n", comKey),
		fmt.Sprintf("domain = \"example.net\"\nselector = \"2020\"\nkey_file = %q\nsubdomains = true\n", netKey),
		conf + ":2: Syslog yes:",
		conf + ":5: Mode sv: mxdetour-milter signs only",
		conf + ":7: UserID opendkim:",
		conf + ":15: ExternalIgnoreList refile:",
		dir + "/SigningTable:4: president@example.org: a key for one sender",
		dir + "/TrustedHosts:6: backup.example.com: trusted_networks takes addresses",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("output:\n%s", out)
	}

	// The output is a configuration the milter loads.
	cfgFile := write("mxdetour.toml", out+"\n[milter.dkim]\n") // a repeated table is an error: the output must be whole
	if code := run([]string{"-check-config", "-config", cfgFile}, &stdout, &stderr); code != 78 {
		t.Errorf("a broken file passed -check-config")
	}
	cfgFile = write("mxdetour.toml", out)
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"-check-config", "-config", cfgFile}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "OK (2 DKIM keys; ") {
		t.Fatalf("-check-config: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}

	// Its signatures verify against the records OpenDKIM's users published.
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	tbl, _, err := dkim.LoadTable(server.KeyRows(cfg.Milter.DKIM.Keys), false)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]string{"mail._domainkey.example.com": comTXT, "2020._domainkey.example.net": netTXT}
	for _, from := range []string{"alice@example.com", "bob@lists.example.net"} {
		d, _ := dkim.FromDomain([]string{" " + from})
		keys := tbl.For(d)
		msg := "From: " + from + "\r\nTo: x@partner.example\r\nSubject: moved from OpenDKIM\r\n\r\nHello\r\n"
		sigs, err := dkim.Sign(strings.NewReader(msg), keys, server.SignOptions(cfg.Milter.DKIM), keys[0].Domain)
		if err != nil || len(sigs) != 1 {
			t.Fatalf("%s: %v %v", from, sigs, err)
		}
		signed := filepath.Join(dir, "signed.eml")
		os.WriteFile(signed, []byte("DKIM-Signature:"+sigs[0]+"\r\n"+msg), 0o644)
		args := []string{"dkim/testdata/verify.py", signed}
		for n, v := range records {
			args = append(args, n+"="+v)
		}
		if out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput(); err != nil || !strings.Contains(string(out), "signature #0: PASS") {
			t.Errorf("%s: dkimpy: %v\n%s", from, err, out)
		}
	}

	// And the doctor finds those records, split in strings with h=sha256
	// as opendkim-genkey wrote them, to match the keys.
	srv := dnstest.New(t, dnstest.Zone{
		"mail._domainkey.example.com": {TXT: [][]string{{comTXT[:40], comTXT[40:]}}},
		"2020._domainkey.example.net": {TXT: [][]string{{netTXT}}},
	})
	f, _ := os.OpenFile(cfgFile, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "\n[dns]\nservers = [%q]\n", srv.Addr())
	f.Close()
	stdout.Reset()
	run([]string{"doctor", "-config", cfgFile}, &stdout, &stderr)
	for _, want := range []string{"OK       dkim mail._domainkey.example.com: published", "OK       dkim 2020._domainkey.example.net: published"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("doctor lacks %q:\n%s", want, stdout.String())
		}
	}
}
