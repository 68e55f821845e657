package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// These tests run mxdetour-policyd as a postmaster does: the binary, a
// config file, real sockets.

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "policyd-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "mxdetour-policyd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func zone() dnstest.Zone {
	return dnstest.Zone{
		"gmail.mxd":    {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"m365.mxd":     {MX: []lookup.MX{{Host: "m365-mxd.mail.protection.outlook.com", Pref: 0}}},
		"plain.mxd":    {MX: []lookup.MX{{Host: "mx.plain.mxd", Pref: 10}}},
		"mx.plain.mxd": {A: []string{"192.0.2.20"}},
		"hang.mxd":     {MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
		"nullmx.mxd":   {MX: []lookup.MX{{Host: ".", Pref: 0}}},
	}
}

func writeConfig(t *testing.T, dns string, extra string) (path string, policy, smap int) {
	policy, smap = testutil.FreePort(t), testutil.FreePort(t)
	dir := t.TempDir()
	path = filepath.Join(dir, "mxdetour.toml")
	cfg := fmt.Sprintf(`[log]
level = "info"
[dns]
servers = [%q]
timeout = "2s"
attempts = 1
asn_zone = "origin.asn.mxd"
[policyd]
policy_listen = "127.0.0.1:%d"
socketmap_listen = "127.0.0.1:%d"
decision_timeout = "200ms"
[transports]
relay = "relay:[mx03.example.net]:587"
[learn]
state_file = %q
log_file = %q
%s`, dns, policy, smap, filepath.Join(dir, "state.json"), filepath.Join(dir, "mail.log"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, policy, smap
}

func startDaemon(t *testing.T, cfg string, port int) *exec.Cmd {
	cmd := exec.Command(bin, "-config", cfg)
	out := &testutil.LockedBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("daemon output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not listening:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func askSocketmap(t *testing.T, r *bufio.Reader, c net.Conn, key string) string {
	req := "transport " + key
	fmt.Fprintf(c, "%d:%s,", len(req), req)
	p, err := socketmap.ReadNetstring(r, 100000, nil)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return string(p)
}

func askPolicy(t *testing.T, r *bufio.Reader, c net.Conn, rcpt string) string {
	fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\nqueue_id=ABC\n\n", rcpt)
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", rcpt, err)
	}
	r.ReadString('\n')
	return strings.TrimSpace(l)
}

func TestDaemonAnswersBothProtocols(t *testing.T) {
	srv := dnstest.New(t, zone())
	srv.SetFault("hang.mxd", dnstest.Timeout)
	cfg, policy, smap := writeConfig(t, srv.Addr(), "")
	startDaemon(t, cfg, smap)

	c, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	defer c.Close()
	r := bufio.NewReader(c)
	for key, want := range map[string]string{
		"*":                     "NOTFOUND ",
		"Alice@GMail.MXD":       "OK relay:[mx03.example.net]:587",
		"bob@m365.mxd":          "OK relay:[mx03.example.net]:587",
		"carol@plain.mxd":       "NOTFOUND ",
		"dave@example.com":      "OK error:5.1.2 example.com is a reserved domain (RFC 2606) and does not receive mail",
		"erin@hang.mxd":         "TEMP DNS lookup failed for hang.mxd", // on_dns_failure = "temp", the default
		"postmaster":            "NOTFOUND ",
		`"odd local"@plain.mxd`: "NOTFOUND ",
	} {
		start := time.Now()
		if got := askSocketmap(t, r, c, key); got != want {
			t.Errorf("socketmap %q = %q, want %q", key, got, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("socketmap %q took %v: the decision deadline is 200ms", key, d)
		}
	}
	pc, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", policy))
	defer pc.Close()
	pr := bufio.NewReader(pc)
	for rcpt, want := range map[string]string{
		"alice@gmail.mxd":  "action=FILTER relay:[mx03.example.net]:587",
		"carol@plain.mxd":  "action=DUNNO",
		"dave@example.com": "action=DUNNO",
	} {
		if got := askPolicy(t, pr, pc, rcpt); got != want {
			t.Errorf("policy %q = %q, want %q", rcpt, got, want)
		}
	}
}

func TestDaemonManyClients(t *testing.T) {
	srv := dnstest.New(t, zone())
	cfg, _, smap := writeConfig(t, srv.Addr(), "")
	startDaemon(t, cfg, smap)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for j := range 50 {
				key, want := fmt.Sprintf("u%d.%d@gmail.mxd", i, j), "OK relay:[mx03.example.net]:587"
				if j%2 == 1 {
					key, want = fmt.Sprintf("u%d.%d@plain.mxd", i, j), "NOTFOUND "
				}
				if got := askSocketmap(t, r, c, key); got != want {
					t.Errorf("%s: %q", key, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := srv.Queries("gmail.mxd", 15); n != 1 {
		t.Errorf("%d MX queries for gmail.mxd from 5,000 requests, want 1", n)
	}
}

func TestCheckCommand(t *testing.T) {
	srv := dnstest.New(t, zone())
	cfg, _, _ := writeConfig(t, srv.Addr(), "")
	out, err := exec.Command(bin, "check", "-config", cfg, "-json", "alice@gmail.mxd", "plain.mxd", "x@example.org", "nullmx.mxd").CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	var res []checkResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := []string{}
	for _, r := range res {
		got = append(got, fmt.Sprintf("%s %s %s %s | %s | %s", r.Domain, r.Route, r.Reason, r.Provider, r.Policy, r.Socketmap))
	}
	want := []string{
		"gmail.mxd relay provider google | action=FILTER relay:[mx03.example.net]:587 | OK relay:[mx03.example.net]:587",
		"plain.mxd direct no-provider  | action=DUNNO | NOTFOUND ",
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
	srv := dnstest.New(t, zone())
	good, _, _ := writeConfig(t, srv.Addr(), "")
	if out, err := exec.Command(bin, "-check-config", "-config", good).CombinedOutput(); err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ": OK") {
		t.Errorf("good config: %v %s", err, out)
	}
	bad, _, _ := writeConfig(t, srv.Addr(), "[policyd.extra]\n")
	out, err := exec.Command(bin, "-check-config", "-config", bad).CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errorsAs(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("bad config: exit %v, want 2", err)
	}
	if !strings.Contains(string(out), "mxdetour.toml:17: policyd.extra: unknown key") {
		t.Errorf("bad config message:\n%s", out)
	}
	pat, _, _ := writeConfig(t, srv.Addr(), "")
	data, _ := os.ReadFile(pat)
	os.WriteFile(pat, []byte(strings.Replace(string(data), "[learn]\n", "[learn]\npatterns = [\"(\"]\n", 1)), 0o644)
	out, err = exec.Command(bin, "-check-config", "-config", pat).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `[learn]: patterns: "(": error parsing regexp`) {
		t.Errorf("bad learn pattern: %v\n%s", err, out)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*target = e
	return ok
}

func TestMetrics(t *testing.T) {
	srv := dnstest.New(t, zone())
	mport := testutil.FreePort(t)
	cfg, _, smap := writeConfig(t, srv.Addr(), fmt.Sprintf("[metrics]\npolicyd_listen = \"127.0.0.1:%d\"\n", mport))
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
		`mxdetour_policyd_dns_lookups_total{result="miss"} 1`,
		`mxdetour_policyd_decision_seconds_count 1`,
		`mxdetour_policyd_learned_blocks 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}
