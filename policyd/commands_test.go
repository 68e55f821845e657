package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/admin"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
)

func TestCheckCommand(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	out, err := exec.Command(bin, "check", "-config", cfg, "-json", "alice@gmail.mxd", "plain.mxd", "x@example.org", "nullmx.mxd").CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	var res []admin.CheckResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := []string{}
	for _, r := range res {
		got = append(got, fmt.Sprintf("%s %s %s %s | %s | %s", r.Domain, r.Route, r.Reason, r.Provider, r.Policy, r.Socketmap))
	}
	want := []string{
		"gmail.mxd relay provider google | action=FILTER relay:[mx03.example.net]:587 | OK relay:[mx03.example.net]:587",
		"plain.mxd direct provider-not-listed default | action=DUNNO | NOTFOUND ",
		"example.org reject reserved-domain  | action=DUNNO | OK error:5.1.2 example.org is a reserved domain (RFC 2606) and does not receive mail",
		"nullmx.mxd direct null-mx  | action=DUNNO | NOTFOUND ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("check -json:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	text, _ := exec.Command(bin, "check", "-config", cfg, "alice@gmail.mxd").CombinedOutput()
	for _, w := range []string{"route:     relay (relay:[mx03.example.net]:587)", "provider:  google (mx-host)", "why:       MX 5 gmail-smtp-in.l.google.com", "why:       provider google: MX host gmail-smtp-in.l.google.com"} {
		if !strings.Contains(string(text), w) {
			t.Errorf("check output lacks %q:\n%s", w, text)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	good, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	// Without mxdetour-milter (bin's directory has none; PATH is empty)
	// the output says what was left unchecked.
	alone := exec.Command(bin, "-check-config", "-config", good)
	alone.Env = append(os.Environ(), "PATH=/nonexistent")
	if out, err := alone.CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK (checked: ") ||
		!strings.Contains(string(out), "not checked: the DKIM keys and country data of [milter] (mxdetour-milter is not installed") {
		t.Errorf("good config: %v %s", err, out)
	}
	// The unit's reload runs -self-only: its output is one journal line.
	if out, err := exec.Command(bin, "-check-config", "-self-only", "-config", good).CombinedOutput(); err != nil ||
		strings.Count(string(out), "\n") != 1 {
		t.Errorf("-self-only on a good config: %v, want one line:\n%s", err, out)
	}
	bad, _, _ := policydtest.WriteConfig(t, srv.Addr(), "[policyd.extra]\n")
	out, err := exec.Command(bin, "-check-config", "-config", bad).CombinedOutput()
	if code := exitCode(err); code != 78 {
		t.Errorf("bad config: exit %d (%v), want 78", code, err)
	}
	if !strings.Contains(string(out), "mxdetour.toml:18: policyd.extra: unknown key") {
		t.Errorf("bad config message:\n%s", out)
	}
	pat, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	data, _ := os.ReadFile(pat)
	os.WriteFile(pat, []byte(strings.Replace(string(data), "[learn]\n", "[learn]\npatterns = [\"(\"]\n", 1)), 0o644)
	out, err = exec.Command(bin, "-check-config", "-config", pat).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `[learn]: patterns: "(": error parsing regexp`) {
		t.Errorf("bad learn pattern: %v\n%s", err, out)
	}
}

// With mxdetour-milter beside it, `mxdetour-policyd -check-config` checks
// the [milter] part too (issue #12: one command leaves nothing
// unchecked): a DKIM key that is no private key fails it, named.
func TestCheckConfigChecksMilterPart(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "mxdetour-policyd")
	for pkg, out := range map[string]string{".": pol, "../milter": filepath.Join(dir, "mxdetour-milter")} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	srv := dnstest.New(t, policydtest.Zone())
	good, _, _ := policydtest.WriteConfig(t, srv.Addr(), "")
	out, err := exec.Command(pol, "-check-config", "-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mxdetour-milter -check-config:\n") || !strings.Contains(string(out), "OK (0 DKIM keys; ") ||
		strings.Contains(string(out), "not checked") {
		t.Errorf("good config: %v\n%s", err, out)
	}
	pub := filepath.Join(dir, "pub.txt")
	if err := os.WriteFile(pub, []byte("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad, _, _ := policydtest.WriteConfig(t, srv.Addr(), fmt.Sprintf("[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey_file = %q\n", pub))
	out, err = exec.Command(pol, "-check-config", "-config", bad).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), pub) {
		t.Errorf("a public key as key_file: exit %d, want 78 naming %s:\n%s", code, pub, out)
	}
	// The unit's reload checks policyd's part only: a milter key problem
	// must not stop routing from reloading.
	out, err = exec.Command(pol, "-check-config", "-self-only", "-config", bad).CombinedOutput()
	if err != nil || strings.Contains(string(out), "mxdetour-milter -check-config") {
		t.Errorf("-self-only with a bad DKIM key: %v, want OK without the milter's check:\n%s", err, out)
	}
}

// exitCode is a finished command's exit code, -1 when it did not exit.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func TestMetrics(t *testing.T) {
	srv := dnstest.New(t, policydtest.Zone())
	mport := testutil.FreePort(t)
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), fmt.Sprintf("[metrics]\npolicyd_listen = \"127.0.0.1:%d\"\n", mport))
	startDaemon(t, cfg, smap)
	c, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	defer c.Close()
	askSocketmap(t, bufio.NewReader(c), c, "a@gmail.mxd")
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`mxdetour_policyd_decisions_total{provider="google",reason="provider",route="relay"} 1`,
		`mxdetour_policyd_decision_seconds_count 1`,
		`mxdetour_policyd_learned_blocks 0`,
		`mxdetour_policyd_connections_open{listener="socketmap"} 1`,
		`mxdetour_policyd_requests_total{listener="socketmap"} 1`,
		`mxdetour_policyd_connections_accepted_total{listener="policy"} 0`,
		`mxdetour_policyd_malformed_requests_total{listener="policy"} 0`,
		`mxdetour_policyd_panics_total{listener="socketmap"} 0`,
		`mxdetour_policyd_dns_upstream_total{result="error"} 0`,
		`mxdetour_policyd_dns_failures_total 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	for what, re := range map[string]string{
		// The decision's MX lookup missed the cache and was answered
		// upstream; the start-up waited on the socketmap listener too.
		"socketmap connections":  `\nmxdetour_policyd_connections_accepted_total\{listener="socketmap"\} [1-9]`,
		"DNS cache misses":       `\nmxdetour_policyd_dns_cache_total\{result="miss"\} [1-9]`,
		"upstream DNS answers":   `\nmxdetour_policyd_dns_upstream_total\{result="answer"\} [1-9]`,
		"a blocklist check time": `\nmxdetour_policyd_last_blocklist_check_timestamp_seconds\{addr="[^"]+",zone="[^"]+"\} 1\.[0-9]+e\+09\n`,
	} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("metrics lack %s (%s):\n%s", what, re, body)
		}
	}
}
