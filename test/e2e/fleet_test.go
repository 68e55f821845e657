package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// fleetHost is one MX host of a fleet: a policyd binary with its own
// delivery log, state file and sockets, and the shared Redis. No Postfix:
// the test writes the delivery log lines Postfix would and asks the
// socketmap as the queue manager does.
type fleetHost struct {
	t       *testing.T
	name    string
	cfg     string
	log     string
	smap    int
	policy  int
	state   string // learn.state_file
	d       *daemonProc
	conn    net.Conn
	r       *bufio.Reader
	queueID int
}

const fleetRelay = "OK relay:[127.0.0.1]:2525"

func startFleetHost(t *testing.T, bin, dnsAddr, redisURL, name string, extra ...string) *fleetHost {
	t.Helper()
	dir := t.TempDir()
	h := &fleetHost{t: t, name: name, cfg: filepath.Join(dir, "mxdetour.toml"), log: filepath.Join(dir, "mail.log"),
		smap: testutil.FreePort(t), policy: testutil.FreePort(t), state: filepath.Join(dir, "state.json")}
	policy := h.policy
	must(t, os.WriteFile(h.log, nil, 0o640))
	must(t, os.WriteFile(h.cfg, []byte(fmt.Sprintf(`[log]
level = "debug"

[dns]
servers = [%q]
timeout = "500ms"
attempts = 1
min_ttl = "1s"
asn_zone = "origin.asn.e2e"
asn6_zone = "origin6.asn.e2e"

[policyd]
policy_listen = "127.0.0.1:%d"
socketmap_listen = "127.0.0.1:%d"
decision_timeout = "300ms"

[transports]
relay = "relay:[127.0.0.1]:2525"

[learn]
enabled = true
log_file = %q
state_file = %q

[fleet]
redis_url = %q
name = %q
%s`, dnsAddr, policy, h.smap, h.log, filepath.Join(dir, "state.json"), redisURL, name, strings.Join(extra, "\n"))), 0o644))
	h.d = startDaemon(t, bin, h.cfg, policy, h.smap)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.smap))
	must(t, err)
	t.Cleanup(func() { c.Close() })
	h.conn, h.r = c, bufio.NewReader(c)
	return h
}

// ask asks the socketmap the route of u@dom; an answer other than OK or
// NOTFOUND (TEMP, TIMEOUT, PERM: Postfix would defer) fails the test.
func (h *fleetHost) ask(dom string) string {
	h.t.Helper()
	req := "transport u@" + dom
	_ = h.conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(h.conn, "%d:%s,", len(req), req)
	p, err := socketmap.ReadNetstring(h.r, 100000, nil)
	if err != nil {
		h.t.Fatalf("%s: %s: %v", h.name, req, err)
	}
	a := string(p)
	if !strings.HasPrefix(a, "OK ") && !strings.HasPrefix(a, "NOTFOUND") {
		h.t.Fatalf("%s answered %q for %s: Postfix would defer", h.name, a, req)
	}
	return a
}

// refused writes to the host's delivery log that the MX of dom refused
// our IP, as Postfix logs it; it returns when the line was written.
func (h *fleetHost) refused(dom, mx, mxAddr string) time.Time {
	h.t.Helper()
	h.queueID++
	f, err := os.OpenFile(h.log, os.O_APPEND|os.O_WRONLY, 0)
	must(h.t, err)
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s postfix/smtp[4242]: 4F%05X: to=<u@%s>, relay=%s[%s]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.7.1, status=bounced (host %s[%s] said: 554 5.7.1 Service unavailable; Client host [192.0.2.5] blocked using zen.spamhaus.org (in reply to RCPT TO command))\n",
		time.Now().Format(time.RFC3339), h.name, h.queueID, dom, mx, mxAddr, mx, mxAddr)
	must(h.t, err)
	return time.Now()
}

// routes waits until the host answers want for dom; it returns when.
func (h *fleetHost) routes(dom, want string, within time.Duration, what string) time.Time {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if h.ask(dom) == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %s does not answer %q for %s within %s", what, h.name, want, dom, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blocks runs the blocks command of the host.
func (h *fleetHost) blocks(bin string, args ...string) string {
	h.t.Helper()
	out, err := exec.Command(bin, append([]string{"blocks", "-config", h.cfg}, args...)...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("%s: blocks %v: %v\n%s", h.name, args, err, out)
	}
	return string(out)
}

// policydBin is the binary TestMain built, or one built here when the
// suite skips its Postfix tests (this one needs no Postfix).
func policydBin(t *testing.T) string {
	if binPolicyd != "" {
		return binPolicyd
	}
	bin := filepath.Join(t.TempDir(), "mxdetour-policyd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../policyd").CombinedOutput(); err != nil {
		t.Fatalf("building policyd: %v\n%s", err, out)
	}
	return bin
}

// twoHosts starts a Redis and two policyd hosts on it, mx01 and mx02,
// with extra config each, connected to the fleet.
func twoHosts(t *testing.T, extra ...string) (*fleettest.Redis, string, *fleetHost, *fleetHost) {
	t.Helper()
	redis := fleettest.Start(t)
	bin := policydBin(t)
	dns := dnstest.New(t, zone()).Addr()
	a := startFleetHost(t, bin, dns, redis.URL(), "mx01", extra...)
	b := startFleetHost(t, bin, dns, redis.URL(), "mx02", extra...)
	for _, h := range []*fleetHost{a, b} {
		h.d.waitOutput("fleet: connected", 10*time.Second)
	}
	return redis, bin, a, b
}

// Two MX hosts, one Redis (issue #13): a block learned on mx01 routes
// mx02's recipients within 2 s of the log line; `blocks` on mx02 lists it
// with the host that learned it, `blocks forget` on mx02 clears it on
// mx01; with Redis stopped both keep answering the same routes, never an
// error; a block mx01 learns meanwhile reaches mx02 within 5 s of Redis
// coming back (empty: it keeps nothing on disk).
func TestFleet(t *testing.T) {
	t.Parallel()
	redis, bin, a, b := twoHosts(t)
	for _, h := range []*fleetHost{a, b} {
		h.routes("plain.e2e", "NOTFOUND ", 5*time.Second, "before any block")
	}

	wrote := a.refused("plain.e2e", "mx.plain.e2e", "192.0.2.25")
	took := b.routes("plain.e2e", fleetRelay, 2*time.Second, "a block learned on mx01").Sub(wrote)
	t.Logf("mx02 routes to the relay %s after mx01's log line", took.Round(time.Millisecond))
	if out := b.blocks(bin); !strings.Contains(out, "plain.e2e\t") || !strings.Contains(out, "host=mx01") {
		t.Errorf("blocks on mx02 does not list mx01's block:\n%s", out)
	}

	b.blocks(bin, "forget", "plain.e2e")
	a.routes("plain.e2e", "NOTFOUND ", 2*time.Second, "blocks forget on mx02")
	b.routes("plain.e2e", "NOTFOUND ", 2*time.Second, "blocks forget on mx02")

	a.refused("blocked.e2e", "mx.blocked.e2e", "192.0.2.26")
	b.routes("blocked.e2e", fleetRelay, 2*time.Second, "a second block")

	redis.Stop()
	for _, h := range []*fleetHost{a, b} {
		h.d.waitOutput("Redis unreachable", 5*time.Second)
	}
	a.refused("retry.e2e", "mx.retry.e2e", "192.0.2.27")
	a.routes("retry.e2e", fleetRelay, 2*time.Second, "a block learned while Redis is down, on its own host")
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, h := range []*fleetHost{a, b} {
			if got := h.ask("blocked.e2e"); got != fleetRelay {
				t.Fatalf("%s answers %q for blocked.e2e with Redis down, want %q", h.name, got, fleetRelay)
			}
			if got := h.ask("plain.e2e"); got != "NOTFOUND " {
				t.Fatalf("%s answers %q for plain.e2e with Redis down, want NOTFOUND", h.name, got)
			}
		}
	}
	if got := b.ask("retry.e2e"); got != "NOTFOUND " {
		t.Fatalf("mx02 knows of retry.e2e before Redis is back: %q", got)
	}

	redis.Restart()
	back := time.Now()
	took = b.routes("retry.e2e", fleetRelay, 5*time.Second, "mx01's block learned while Redis was down").Sub(back)
	t.Logf("mx02 routes mx01's outage block %s after Redis came back", took.Round(time.Millisecond))
	for _, h := range []*fleetHost{a, b} {
		if n := strings.Count(h.d.output(), "Redis unreachable"); n != 1 {
			t.Errorf("%s logged the outage %d times, want once", h.name, n)
		}
	}
}

// send asks the host's policy service about one message of login with
// rcpts recipients, as smtpd does at RCPT (once per recipient), and
// returns the last answer.
func (h *fleetHost) send(login string, rcpts int) string {
	h.t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.policy))
	must(h.t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	h.queueID++
	var action string
	for i := range rcpts {
		fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=203.0.113.7\n"+
			"client_name=client.e2e\nsasl_username=%s\nsender=%s@sender.e2e\nrecipient=r%d@plain.e2e\nrecipient_count=%d\n"+
			"instance=%s.%d\nqueue_id=\n\n", login, login, i, i, h.name, h.queueID)
		line, err := r.ReadString('\n')
		if err != nil {
			h.t.Fatalf("%s: policy answer: %v", h.name, err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			h.t.Fatalf("%s: policy answer: %v", h.name, err)
		}
		action = strings.TrimSpace(line)
	}
	return action
}

// Two MX hosts, one Redis, one limit (issue #14): alice's recipients on
// mx01 and on mx02 count together, so the message that takes her past the
// limit is held on whichever host it reaches; bob is unaffected; a
// release on one host resets her window for both.
func TestFleetLimits(t *testing.T) {
	t.Parallel()
	_, _, a, b := twoHosts(t, "\n[[limits]]\nkey = \"sasl_username\"\nmax = 5\nwindow = \"1h\"\n")
	if got := a.send("alice", 3); got != "action=DUNNO" {
		t.Fatalf("mx01: alice's 3 recipients: %q, want DUNNO", got)
	}
	if got := b.send("alice", 2); got != "action=DUNNO" {
		t.Fatalf("mx02: alice's next 2 recipients: %q, want DUNNO (5 of 5)", got)
	}
	got := b.send("alice", 1)
	if !strings.HasPrefix(got, "action=HOLD") || !strings.Contains(got, "(6/5 in 1h)") {
		t.Fatalf("mx02: alice's 6th recipient: %q, want HOLD ... (6/5 in 1h): mx01's 3 count on mx02", got)
	}
	if got := a.send("alice", 1); !strings.HasPrefix(got, "action=HOLD") {
		t.Errorf("mx01: alice's next message: %q, want HOLD", got)
	}
	if got := a.send("bob", 5); got != "action=DUNNO" {
		t.Errorf("mx01: bob's 5 recipients: %q, want DUNNO", got)
	}
	if n := strings.Count(a.d.output()+b.d.output(), "alert: sasl_username:alice exceeded"); n != 1 {
		t.Errorf("%d alerts for alice in the fleet, want 1 (one per key and window)", n)
	}
	// What `holds release alice` asks of mx02's daemon once it released
	// her mail from Postfix's hold queue (there is no Postfix here).
	must(t, limits.RequestRelease(limits.StatePath(b.state), "sasl_username:alice"))
	deadline := time.Now().Add(5 * time.Second)
	for a.send("alice", 1) != "action=DUNNO" {
		if time.Now().After(deadline) {
			t.Fatal("mx01 still holds alice 5 s after her release on mx02")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
