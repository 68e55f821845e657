package main

import (
	"bufio"
	"context"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/respond"
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
		// The default providers' zone passes its RFC 5782 test point:
		// our addresses' "not listed" on it is believed.
		"2.0.0.127.zen.spamhaus.org": {A: []string{"127.0.0.2"}},
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
ipv4 = "smtp-ipv4:"
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
	cmd, _ := startDaemonOutput(t, cfg, port)
	return cmd
}

// startDaemonOutput is startDaemon that also returns what the daemon
// logs, for a test that waits on a line.
func startDaemonOutput(t *testing.T, cfg string, port int) (*exec.Cmd, *testutil.LockedBuffer) {
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
	testutil.Eventually(t, "the daemon listening", func() bool { return canDial(fmt.Sprintf("127.0.0.1:%d", port)) })
	return cmd, out
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
	srv := dnstest.New(t, zone())
	good, _, _ := writeConfig(t, srv.Addr(), "")
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
	bad, _, _ := writeConfig(t, srv.Addr(), "[policyd.extra]\n")
	out, err := exec.Command(bin, "-check-config", "-config", bad).CombinedOutput()
	if code := exitCode(err); code != 78 {
		t.Errorf("bad config: exit %d (%v), want 78", code, err)
	}
	if !strings.Contains(string(out), "mxdetour.toml:18: policyd.extra: unknown key") {
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
	srv := dnstest.New(t, zone())
	good, _, _ := writeConfig(t, srv.Addr(), "")
	out, err := exec.Command(pol, "-check-config", "-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mxdetour-milter -check-config:\n") || !strings.Contains(string(out), "OK (0 DKIM keys; ") ||
		strings.Contains(string(out), "not checked") {
		t.Errorf("good config: %v\n%s", err, out)
	}
	pub := filepath.Join(dir, "pub.txt")
	if err := os.WriteFile(pub, []byte("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad, _, _ := writeConfig(t, srv.Addr(), fmt.Sprintf("[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey_file = %q\n", pub))
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

// TestExitCodes: a broken configuration and arguments the command does not
// know end with 78 (EX_CONFIG; the unit does not restart) and the usage,
// never with a running daemon; -h is no error.
func TestExitCodes(t *testing.T) {
	cfg, _, _ := writeConfig(t, "127.0.0.1:9", "")
	bad, _, _ := writeConfig(t, "127.0.0.1:9", "[policyd.extra]\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", bad}, "policyd.extra: unknown key"},
		{[]string{"help"}, `unknown argument "help"`},
		{[]string{"-check-config", "typo.toml"}, `unknown argument "typo.toml"`},
		{[]string{"-config", cfg, "extra"}, `unknown argument "extra"`},
		{[]string{"-version", "x"}, `unknown argument "x"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-config"}, "flag needs an argument: -config"},
		{[]string{"check"}, "usage: mxdetour-policyd check"},
		{[]string{"check", "-bogus", "a@b.mxd"}, "flag provided but not defined: -bogus"},
		{[]string{"blocks", "-config", cfg, "extra"}, "usage: mxdetour-policyd blocks"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 78 {
			t.Errorf("%q: exit %d (%v), want 78\n%s", tc.args, code, err, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(strings.ToLower(string(out)), "usage") && !strings.Contains(tc.want, "unknown key") {
			t.Errorf("%q: output lacks %q or the usage:\n%s", tc.args, tc.want, out)
		}
	}
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if exitCode(err) != 0 || !strings.Contains(string(out), "mxdetour-policyd check [-config FILE]") {
		t.Errorf("-h: %v\n%s", err, out)
	}
}

func dialAsk(t *testing.T, addr, key string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return askSocketmap(t, bufio.NewReader(c), c, key)
}

// TestSocketActivation: under systemd's own activation tool, the socketmap
// is served on the socket the tool passes as "socketmap", not on the
// configured address, and the policy service, which it did not pass, on
// its configured address.
func TestSocketActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: systemd)")
	}
	srv := dnstest.New(t, zone())
	cfg, policyPort, smapPort := writeConfig(t, srv.Addr(), "")
	activated := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := daemontest.Start(t, exec.Command(tool, "-l", activated, "--fdname=socketmap", bin, "-config", cfg))
	testutil.Eventually(t, "the tool listening", func() bool { return strings.Contains(p.Output(), "Listening on") })
	// The tool starts the daemon at this first connection.
	if got := dialAsk(t, activated, "alice@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Errorf("activated socketmap: %q", got)
	}
	testutil.Eventually(t, "the policy service on its configured address", func() bool { return canDial(fmt.Sprintf("127.0.0.1:%d", policyPort)) })
	if canDial(fmt.Sprintf("127.0.0.1:%d", smapPort)) {
		t.Error("the configured socketmap address is served too")
	}
	if !strings.Contains(p.Output(), `"socket": "socketmap", "addr": "`+activated+`", "from": "systemd"`) {
		t.Errorf("the log does not say the socketmap came from systemd")
	}
	p.Stop(t)
}

// TestRestartQueues: while the daemon restarts under a socket its parent
// holds (as systemd holds a socket unit's), Postfix's connections wait in
// the kernel's queue and are answered by the new process; none is refused.
func TestRestartQueues(t *testing.T) {
	srv := dnstest.New(t, zone())
	cfg, _, _ := writeConfig(t, srv.Addr(), "")
	sock := daemontest.Listen(t, "socketmap")
	first := daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	if got := dialAsk(t, sock.Addr(), "alice@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Fatalf("first process: %q", got)
	}
	first.Stop(t)

	// Nobody accepts now; these connect all the same and send their request.
	var conns []net.Conn
	for i := range 20 {
		c, err := net.Dial("tcp", sock.Addr())
		if err != nil {
			t.Fatalf("connection %d while the daemon is down: %v", i, err)
		}
		defer c.Close()
		req := fmt.Sprintf("transport u%d@gmail.mxd", i)
		fmt.Fprintf(c, "%d:%s,", len(req), req)
		conns = append(conns, c)
	}
	second := daemontest.Start(t, daemontest.Command(t, bin, []string{"-config", cfg}, sock))
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := socketmap.ReadNetstring(bufio.NewReader(c), 100000, nil)
		if err != nil || string(got) != "OK relay:[mx03.example.net]:587" {
			t.Errorf("connection %d made during the restart: %q, %v", i, got, err)
		}
	}
	second.Stop(t)
}

// TestNotifyAndWatchdog: READY=1 once serving, WATCHDOG=1 every half
// WATCHDOG_USEC, RELOADING=1 and READY=1 around SIGHUP (a failed reload
// says so in STATUS=), STOPPING=1 at SIGTERM.
func TestNotifyAndWatchdog(t *testing.T) {
	srv := dnstest.New(t, zone())
	cfg, _, _ := writeConfig(t, srv.Addr(), "")
	n := daemontest.ListenNotify(t)
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=1000000")
	p := daemontest.Start(t, cmd)
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving policy on 127.0.0.1:") {
		t.Errorf("READY: %q", m)
	}
	for range 3 {
		n.Next(t, "WATCHDOG=1")
	}
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=serving") {
		t.Errorf("after reload: %q", m)
	}
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(data, "[policyd.extra]\n"...), 0o644)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	if m := n.Next(t, "READY=1"); !strings.Contains(m, "STATUS=reload failed, running the previous configuration: ") || !strings.Contains(m, "policyd.extra: unknown key") {
		t.Errorf("after a failed reload: %q", m)
	}
	n.Next(t, "WATCHDOG=1")
	p.Stop(t)
	n.Next(t, "STOPPING=1")
}

func canDial(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func probeDaemon(t testing.TB) *policyd {
	cfg := config.Default()
	cfg.DNS.Servers = []string{"127.0.0.1:9"} // never asked: the probe needs no DNS
	cfg.Learn.Enabled = false
	d, err := parts(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	d.probe = respond.New(d.runtime().engine, cfg.Policyd.DecisionTimeout.Duration, zap.NewNop())
	return d
}

// TestHealthProbe: the watchdog's probe passes on a daemon with no DNS at
// all (a dead resolver must not get policyd restarted), and adds nothing
// to the decision counters that metrics export.
func TestHealthProbe(t *testing.T) {
	d := probeDaemon(t)
	d.resp = respond.New(d.runtime().engine, time.Second, zap.NewNop())
	if err := d.health(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := d.resp.Stats().Decisions.Load(); n != 0 {
		t.Errorf("the probe was counted as %d decisions", n)
	}
}

// BenchmarkHealthProbe: what one watchdog probe costs; the units allow it
// 5 seconds.
func BenchmarkHealthProbe(b *testing.B) {
	d := probeDaemon(b)
	ctx := context.Background()
	for b.Loop() {
		if err := d.health(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMissingStateDirectory: a state_file in a directory that does not
// exist fails -check-config, naming the key, but the daemon serves anyway
// (learned blocks in memory only, said at error level): routing must not
// stop for it.
func TestMissingStateDirectory(t *testing.T) {
	srv := dnstest.New(t, zone())
	cfg, _, smap := writeConfig(t, srv.Addr(), "")
	data, _ := os.ReadFile(cfg)
	missing := filepath.Join(t.TempDir(), "gone", "state.json")
	data = regexp.MustCompile(`(?m)^state_file = .*$`).ReplaceAll(data, []byte(fmt.Sprintf("state_file = %q", missing)))
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput()
	if code := exitCode(err); code != 78 || !strings.Contains(string(out), "learn.state_file") || !strings.Contains(string(out), "does not exist") {
		t.Errorf("-check-config: exit %d\n%s", code, out)
	}
	startDaemon(t, cfg, smap)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smap))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := askSocketmap(t, bufio.NewReader(c), c, "a@gmail.mxd"); got != "OK relay:[mx03.example.net]:587" {
		t.Errorf("socketmap: %q", got)
	}
}
