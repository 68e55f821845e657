package e2e

import (
	"cmp"
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

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
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
		// The default providers' blocklist passes its RFC 5782 test
		// point, so that its "not listed" is believed.
		"2.0.0.127.zen.spamhaus.org": {A: []string{"127.0.0.2"}},
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
	// addrs are the daemons' listen addresses in mxdetour.toml:
	// 127.0.0.1:PORT, or unix:PATH with worldOptions.Unix.
	addrs   struct{ policy, socketmap, milter string }
	unix    bool
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
	// DirectHost is the direct sink's loopback address ("" = 127.0.0.1).
	// Another one (127.0.0.2) tells it from the relay by host alone, as
	// the delivery status filter must: a reply names the host, no port.
	DirectHost string
	// StatusFilter sets smtp_delivery_status_filter to policyd's
	// socketmap, map "status".
	StatusFilter bool
	// BeforeStart runs after the config is written, before the daemons start.
	BeforeStart func(w *world)
	// Unix wires the three sockets as contrib/systemd's socket units and
	// contrib/postfix/main.cf's "unix sockets" alternative say: in the
	// queue directory's private/, made by "systemd" (the test) and passed
	// to the daemons by name; Postfix connects to unix:private/...
	Unix bool
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), dkimTXT: map[string]string{}, dnsTO: o.DNSTimeout, ipv4TP: o.IPv4Transport}
	if w.dnsTO == "" {
		w.dnsTO = "500ms"
	}
	w.dns = dnstest.New(t, zone())
	w.relay = newSink(t, "relay")
	w.direct = newSinkAt(t, "direct", cmp.Or(o.DirectHost, "127.0.0.1"))
	w.ports.policy, w.ports.socketmap, w.ports.milter = testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	w.unix = o.Unix
	tcp := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	w.addrs.policy, w.addrs.socketmap, w.addrs.milter = tcp(w.ports.policy), tcp(w.ports.socketmap), tcp(w.ports.milter)

	o.Postfix.DirectPort, o.Postfix.DirectHost = w.direct.port(), o.DirectHost
	w.postfixWiring(&o.Postfix, o.Wiring, o.NoMilter)
	if o.StatusFilter {
		o.Postfix.Extra = append(o.Postfix.Extra, fmt.Sprintf("smtp_delivery_status_filter = socketmap:%s:status", w.postfixAddr("socketmap", w.ports.socketmap)))
	}
	w.pf = startPostfix(t, o.Postfix)
	var socks map[string]daemontest.Socket
	if o.Unix {
		socks = unitSockets(t, filepath.Join(w.pf.dir, "queue"))
		w.addrs.policy, w.addrs.socketmap, w.addrs.milter = "unix:"+socks["policy"].Addr(), "unix:"+socks["socketmap"].Addr(), "unix:"+socks["milter"].Addr()
	}
	w.writeConfig(o.ExtraCfg)
	if o.BeforeStart != nil {
		o.BeforeStart(w)
	}
	if o.Unix {
		w.policyd = startActivated(t, binPolicyd, w.cfgPath, socks["policy"], socks["socketmap"])
		if !o.NoMilter {
			w.milter = startActivated(t, binMilter, w.cfgPath, socks["milter"])
		}
		return w
	}
	w.policyd = startDaemon(t, binPolicyd, w.cfgPath, w.ports.policy, w.ports.socketmap)
	if !o.NoMilter {
		w.milter = startDaemon(t, binMilter, w.cfgPath, w.ports.milter)
	}
	return w
}

// postfixAddr is how Postfix names one of the daemons' sockets: as the
// unix alternative of contrib/postfix/main.cf says (relative to the
// queue directory), or the loopback port.
func (w *world) postfixAddr(name string, port int) string {
	if w.unix {
		return "unix:private/mxdetour-" + name
	}
	return fmt.Sprintf("inet:127.0.0.1:%d", port)
}

// postfixWiring adds contrib/postfix's wiring to o: for the socketmap,
// transport_maps for the queue manager and a trivial-rewrite without it for
// smtpd (so smtpd's RCPT never waits on policyd); the milter with its short
// timeouts.
func (w *world) postfixWiring(o *postfixOptions, wiring string, noMilter bool) {
	switch wiring {
	case "socketmap":
		o.Extra = append(o.Extra, fmt.Sprintf("transport_maps = socketmap:%s:transport", w.postfixAddr("socketmap", w.ports.socketmap)))
		o.MasterExtra += "rewrite-smtpd unix - - n - - trivial-rewrite\n  -o transport_maps=\n"
		o.SmtpdOpts = append(o.SmtpdOpts, "rewrite_service_name=rewrite-smtpd")
	case "policy":
		o.Extra = append(o.Extra, fmt.Sprintf("smtpd_recipient_restrictions = check_policy_service { %s, timeout=2s, try_limit=1, default_action=DUNNO }, permit_mynetworks, reject_unauth_destination", w.postfixAddr("policy", w.ports.policy)))
	default:
		w.t.Fatalf("unknown wiring %q", wiring)
	}
	if !noMilter {
		o.Extra = append(o.Extra,
			fmt.Sprintf("smtpd_milters = %s", w.postfixAddr("milter", w.ports.milter)),
			fmt.Sprintf("non_smtpd_milters = %s", w.postfixAddr("milter", w.ports.milter)),
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
policy_listen = %q
socketmap_listen = %q
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
listen = %q
trusted_networks = ["127.0.0.0/8"]
%s
`, w.dns.Addr(), w.dnsTO, w.addrs.policy, w.addrs.socketmap, w.relay.port(), w.ipv4TP, w.pf.maillog,
		filepath.Join(w.dir, "state.json"), w.pf.conf, w.addrs.milter, extra)
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
	socks []daemontest.Socket // passed as systemd passes them; waited on instead of ports
	mu    sync.Mutex
	cmd   *exec.Cmd
	out   *testutil.LockedBuffer
}

func startDaemon(t *testing.T, bin, cfg string, ports ...int) *daemonProc {
	t.Helper()
	return startProc(t, &daemonProc{t: t, bin: bin, cfg: cfg, ports: ports})
}

// startActivated starts a daemon with socks passed as a socket unit
// passes them (LISTEN_FDS, by name), not opened by the daemon.
func startActivated(t *testing.T, bin, cfg string, socks ...daemontest.Socket) *daemonProc {
	t.Helper()
	return startProc(t, &daemonProc{t: t, bin: bin, cfg: cfg, socks: socks})
}

func startProc(t *testing.T, d *daemonProc) *daemonProc {
	t.Helper()
	bin := d.bin
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
	if len(d.socks) > 0 {
		d.cmd = daemontest.Command(d.t, d.bin, []string{"-config", d.cfg}, d.socks...)
	} else {
		d.cmd = exec.Command(d.bin, "-config", d.cfg)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	err := d.cmd.Start()
	d.mu.Unlock()
	must(d.t, err)
	// Generous: the fault matrix starts 13 Postfix instances and their
	// daemons at once on two cores.
	for _, p := range d.ports {
		testutil.EventuallyWithin(d.t, 30*time.Second, fmt.Sprintf("%s listening on %d", filepath.Base(d.bin), p), func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	// A passed socket accepts before the daemon serves (the kernel
	// queues): wait for the daemon to say it serves each.
	for _, sk := range d.socks {
		d.waitOutput(sk.Addr(), 30*time.Second)
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
	testutil.EventuallyWithin(d.t, within, fmt.Sprintf("%q in %s output", substr, filepath.Base(d.bin)), func() bool {
		return strings.Contains(d.output(), substr)
	})
}
