package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// zone is the test DNS: Google-, Microsoft- and otherwise-hosted domains.
// The names are made up under a TLD that does not exist; only the
// in-process dnstest server answers them, and Postfix itself does no DNS
// (smtp_dns_support_level = disabled, relayhost is a loopback sink).
func zone() dnstest.Zone {
	mx := func(hosts ...string) dnstest.Records {
		r := dnstest.Records{TTL: 60}
		for i, h := range hosts {
			r.MX = append(r.MX, lookup.MX{Host: h, Pref: uint16(5 * (i + 1))})
		}
		return r
	}
	return dnstest.Zone{
		"gmail.e2e":                 mx("gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"),
		"workspace.e2e":             mx("smtp.google.com"),
		"m365.e2e":                  mx("m365-e2e.mail.protection.outlook.com"),
		"plain.e2e":                 mx("mx.plain.e2e"),
		"blocked.e2e":               mx("mx.blocked.e2e"),
		"retry.e2e":                 mx("mx.retry.e2e"),
		"hang.e2e":                  mx("gmail-smtp-in.l.google.com"),
		"sender.e2e":                mx("mx.sender.e2e"),
		"mx.plain.e2e":              {A: []string{"192.0.2.25"}},
		"mx.blocked.e2e":            {A: []string{"192.0.2.26"}},
		"mx.retry.e2e":              {A: []string{"192.0.2.27"}},
		"25.2.0.192.origin.asn.e2e": {TXT: [][]string{{"64500 | 192.0.2.0/24 | ZZ | test | 2024-01-01"}}},
		"26.2.0.192.origin.asn.e2e": {TXT: [][]string{{"64500 | 192.0.2.0/24 | ZZ | test | 2024-01-01"}}},
		"27.2.0.192.origin.asn.e2e": {TXT: [][]string{{"64500 | 192.0.2.0/24 | ZZ | test | 2024-01-01"}}},
	}
}

// world is one scenario's set-up: DNS, two sinks, both daemons and Postfix.
type world struct {
	t       *testing.T
	dir     string
	dns     *dnstest.Server
	relay   *sink // "the relay (mx03)"
	direct  *sink // "direct delivery"
	pf      *postfix
	cfgPath string
	policyd *daemonProc
	milter  *daemonProc
	ports   struct{ policy, socketmap, milter int }
	dkimTXT map[string]string // selector._domainkey.domain -> TXT value
	dnsTO   string            // [dns] timeout
	ipv4TP  string            // [transports] ipv4 ("" = none)
}

type worldOptions struct {
	Wiring   string // "socketmap" or "policy"
	ExtraCfg string // more TOML
	Postfix  postfixOptions
	NoMilter bool
	// DNSTimeout is the daemons' [dns] timeout ("" = 500ms).
	DNSTimeout string
	// IPv4Transport is [transports] ipv4 ("" = none): ExtraCfg comes after
	// [milter] and cannot add to [transports].
	IPv4Transport string
	// BeforeStart runs after the config is written, before the daemons start.
	BeforeStart func(w *world)
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), dkimTXT: map[string]string{}, dnsTO: o.DNSTimeout, ipv4TP: o.IPv4Transport}
	if w.dnsTO == "" {
		w.dnsTO = "500ms"
	}
	w.dns = dnstest.New(t, zone())
	w.relay = newSink(t, "relay")
	w.direct = newSink(t, "direct")
	w.ports.policy, w.ports.socketmap, w.ports.milter = testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)

	o.Postfix.DirectPort = w.direct.port()
	w.postfixWiring(&o.Postfix, o.Wiring, o.NoMilter)
	w.pf = startPostfix(t, o.Postfix)
	w.writeConfig(o.ExtraCfg)
	if o.BeforeStart != nil {
		o.BeforeStart(w)
	}
	w.policyd = startDaemon(t, binPolicyd, w.cfgPath, w.ports.policy, w.ports.socketmap)
	if !o.NoMilter {
		w.milter = startDaemon(t, binMilter, w.cfgPath, w.ports.milter)
	}
	return w
}

// postfixWiring adds contrib/postfix's wiring to o: for the socketmap,
// transport_maps for the queue manager and a trivial-rewrite without it for
// smtpd (so smtpd's RCPT never waits on policyd); the milter with its short
// timeouts.
func (w *world) postfixWiring(o *postfixOptions, wiring string, noMilter bool) {
	switch wiring {
	case "socketmap":
		o.Extra = append(o.Extra, fmt.Sprintf("transport_maps = socketmap:inet:127.0.0.1:%d:transport", w.ports.socketmap))
		o.MasterExtra += "rewrite-smtpd unix - - n - - trivial-rewrite\n  -o transport_maps=\n"
		o.SmtpdOpts = append(o.SmtpdOpts, "rewrite_service_name=rewrite-smtpd")
	case "policy":
		o.Extra = append(o.Extra, fmt.Sprintf("smtpd_recipient_restrictions = check_policy_service { inet:127.0.0.1:%d, timeout=2s, try_limit=1, default_action=DUNNO }, permit_mynetworks, reject_unauth_destination", w.ports.policy))
	default:
		w.t.Fatalf("unknown wiring %q", wiring)
	}
	if !noMilter {
		o.Extra = append(o.Extra,
			fmt.Sprintf("smtpd_milters = inet:127.0.0.1:%d", w.ports.milter),
			fmt.Sprintf("non_smtpd_milters = inet:127.0.0.1:%d", w.ports.milter),
			"milter_default_action = accept",
			"milter_connect_timeout = 5s",
			"milter_command_timeout = 5s",
			"milter_content_timeout = 30s",
			// Postfix passes {auth_authen} to milters only with SASL on; XCLIENT
			// LOGIN then sets it without a SASL backend being asked.
			"smtpd_sasl_auth_enable = yes",
		)
	}
}

func (w *world) writeConfig(extra string) {
	w.cfgPath = filepath.Join(w.dir, "mxdetour.toml")
	cfg := fmt.Sprintf(`[log]
level = "debug"
format = "console"

[dns]
servers = [%q]
timeout = %q
attempts = 1
min_ttl = "1s"
asn_zone = "origin.asn.e2e"
asn6_zone = "origin6.asn.e2e"

[policyd]
policy_listen = "127.0.0.1:%d"
socketmap_listen = "127.0.0.1:%d"
decision_timeout = "300ms"

[transports]
relay = "relay:[127.0.0.1]:%d"
ipv4 = %q

[learn]
enabled = true
log_file = %q
state_file = %q
requeue = true
postfix_config = %q

[milter]
listen = "127.0.0.1:%d"
trusted_networks = ["127.0.0.0/8"]
%s
`, w.dns.Addr(), w.dnsTO, w.ports.policy, w.ports.socketmap, w.relay.port(), w.ipv4TP, w.pf.maillog,
		filepath.Join(w.dir, "state.json"), w.pf.conf, w.ports.milter, extra)
	must(w.t, os.WriteFile(w.cfgPath, []byte(cfg), 0o644))
}

// rewriteConfig replaces the daemons' config and reloads them (SIGHUP).
func (w *world) rewriteConfig(extra string) {
	w.writeConfig(extra)
	w.policyd.signal(syscall.SIGHUP)
	if w.milter != nil {
		w.milter.signal(syscall.SIGHUP)
	}
}

// daemonProc is one of our daemons, run from the binary as a postmaster would.
type daemonProc struct {
	t     *testing.T
	bin   string
	cfg   string
	ports []int
	mu    sync.Mutex
	cmd   *exec.Cmd
	out   *testutil.LockedBuffer
}

func startDaemon(t *testing.T, bin, cfg string, ports ...int) *daemonProc {
	t.Helper()
	d := &daemonProc{t: t, bin: bin, cfg: cfg, ports: ports}
	d.start()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), d.output())
		}
	})
	return d
}

func (d *daemonProc) start() {
	d.t.Helper()
	d.mu.Lock()
	d.out = &testutil.LockedBuffer{}
	d.cmd = exec.Command(d.bin, "-config", d.cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	err := d.cmd.Start()
	d.mu.Unlock()
	must(d.t, err)
	// Generous: the fault matrix starts 13 Postfix instances and their
	// daemons at once on two cores.
	for _, p := range d.ports {
		eventually(d.t, 30*time.Second, fmt.Sprintf("%s listening on %d", filepath.Base(d.bin), p), func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
}

func (d *daemonProc) stop() {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
}

func (d *daemonProc) signal(s os.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(s)
	}
}

func (d *daemonProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out == nil {
		return ""
	}
	return d.out.String()
}

func (d *daemonProc) waitOutput(substr string, within time.Duration) {
	d.t.Helper()
	eventually(d.t, within, fmt.Sprintf("%q in %s output", substr, filepath.Base(d.bin)), func() bool {
		return strings.Contains(d.output(), substr)
	})
}
