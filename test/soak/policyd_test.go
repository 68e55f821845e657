package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// A policy request as smtpd sends it at RCPT, for a reserved domain: the
// answer is DUNNO without a DNS query.
const validPolicy = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
	"client_address=192.0.2.1\nclient_name=client.soak.mxd\nhelo_name=client.soak.mxd\n" +
	"sender=a@soak.mxd\nrecipient=x@example.com\nrecipient_count=0\nqueue_id=\n" +
	"instance=1f.6a3b.1\nsize=1000\n\n"

const validSocketmap = "transport x@example.com"

// idleTimeout is the daemon's policyd.idle_timeout here: connections left
// idle or stalled mid-request must be closed by the daemon.
const idleTimeout = 2 * time.Second

// lingering is how many idle and stalled connections the test leaves open
// after the soak for the daemon to close.
const lingering = 20

// TestPolicyd soaks both protocols of mxdetour-policyd at once.
func TestPolicyd(t *testing.T) {
	began := time.Now()
	dns := dnstest.New(t, dnstest.Zone{})
	dir := t.TempDir()
	policy := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	smap := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := filepath.Join(dir, "mxdetour.toml")
	// Log level error: the daemon logs each malformed request as a warning,
	// which is not what this test measures.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[log]
level = "error"
[dns]
servers = [%q]
timeout = "1s"
attempts = 1
[policyd]
policy_listen = %q
socketmap_listen = %q
idle_timeout = %q
[learn]
enabled = false
state_file = %q
[metrics]
policyd_listen = %q
`, dns.Addr(), policy, smap, idleTimeout.String(), filepath.Join(dir, "state.json"), metrics)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := start(t, policydBin, cfg, metrics, policy, smap)

	n, rnd := requests(t), seed(t)
	warmUp(t, d, policy, smap, rnd)
	baseG, baseRSS := d.baseline(t)

	t.Run("attack", func(t *testing.T) {
		t.Run("policy", func(t *testing.T) {
			t.Parallel()
			a := askPolicy(policy)
			defer a.close()
			soak(t, d, policy, n, rnd, policyAttacks(), a.ask)
		})
		t.Run("socketmap", func(t *testing.T) {
			t.Parallel()
			a := askSocketmap(smap)
			defer a.close()
			soak(t, d, smap, n, rnd+1, socketmapAttacks(), a.ask)
		})
	})
	if t.Failed() {
		return
	}
	// Connections left idle or stalled mid-request are the daemon's to
	// close: the goroutines come back while the test still holds them.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range lingering {
		for _, addr := range []string{policy, smap} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
			if i%2 == 1 {
				fmt.Fprint(c, map[string]string{policy: "request=smtpd_access_policy\n", smap: "30:transport "}[addr])
			}
		}
	}
	d.recovered(t, baseG, baseRSS)
	t.Logf("soak of policyd took %v", time.Since(began).Round(time.Millisecond))
}

// warmUp sends valid requests and the simplest malformed ones (random
// bytes, dropped and idle connections), so buffers and pools are in place
// before the baseline is taken; what the other attacks cost shows after.
func warmUp(t *testing.T, d *daemon, policy, smap string, rnd uint64) {
	t.Helper()
	p, s := askPolicy(policy), askSocketmap(smap)
	for range 500 {
		if err := p.ask(); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		if err := s.ask(); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	r := rand.New(rand.NewPCG(rnd, 99))
	h := &holder{slots: make(chan struct{}, maxHeld)}
	for _, set := range []struct {
		addr    string
		attacks []attack
	}{{policy, common()}, {smap, common()}} {
		for range 500 {
			set.attacks[r.IntN(len(set.attacks))].run(set.addr, r, h)
		}
	}
	h.wg.Wait()
	p.close()
	s.close()
}

// asker sends one valid request on a kept connection (as Postfix keeps
// it) and checks the answer; it redials after an error.
type asker struct {
	addr  string
	c     net.Conn
	r     *bufio.Reader
	check func(c net.Conn, r *bufio.Reader) error
}

func (a *asker) ask() error {
	if a.c == nil {
		c, err := net.DialTimeout("tcp", a.addr, answerWithin)
		if err != nil {
			return err
		}
		a.c, a.r = c, bufio.NewReader(c)
	}
	_ = a.c.SetDeadline(time.Now().Add(answerWithin))
	if err := a.check(a.c, a.r); err != nil {
		a.c.Close()
		a.c = nil
		return err
	}
	return nil
}

func (a *asker) close() {
	if a.c != nil {
		a.c.Close()
		a.c = nil
	}
}

func askPolicy(addr string) *asker {
	return &asker{addr: addr, check: func(c net.Conn, r *bufio.Reader) error {
		if _, err := c.Write([]byte(validPolicy)); err != nil {
			return err
		}
		var got strings.Builder
		for {
			l, err := r.ReadString('\n')
			got.WriteString(l)
			if err != nil {
				return fmt.Errorf("policy answer %q: %w", got.String(), err)
			}
			if l == "\n" {
				break
			}
		}
		if got.String() != "action=DUNNO\n\n" {
			return fmt.Errorf("policy answer %q, want action=DUNNO", got.String())
		}
		return nil
	}}
}

func askSocketmap(addr string) *asker {
	return &asker{addr: addr, check: func(c net.Conn, r *bufio.Reader) error {
		if _, err := fmt.Fprintf(c, "%d:%s,", len(validSocketmap), validSocketmap); err != nil {
			return err
		}
		p, err := socketmap.ReadNetstring(r, socketmap.MaxReply, nil)
		if err != nil {
			return fmt.Errorf("socketmap answer: %w", err)
		}
		if !bytes.HasPrefix(p, []byte("OK error:")) && string(p) != "NOTFOUND " {
			return fmt.Errorf("socketmap answer %q, want NOTFOUND or OK error:...", p)
		}
		return nil
	}}
}

func policyAttacks() []attack {
	line := func(r *rand.Rand) string { // printable junk without '\n'
		b := make([]byte, 1+r.IntN(80))
		for i := range b {
			b[i] = byte(' ' + r.IntN(95))
		}
		return string(b)
	}
	return append(common(),
		attack{"endless-line", func(r *rand.Rand) []byte { return bytes.Repeat([]byte("a"), 64<<10+r.IntN(128<<10)) }, finish},
		attack{"oversized-request", func(r *rand.Rand) []byte {
			return []byte("request=smtpd_access_policy\n" + strings.Repeat("ccert_subject="+strings.Repeat("x", 1000)+"\n", 70+r.IntN(50)) + "\n")
		}, finish},
		attack{"junk-lines", func(r *rand.Rand) []byte {
			var b strings.Builder
			for range 1 + r.IntN(20) {
				b.WriteString(line(r) + "\n")
			}
			return []byte(b.String() + "\n")
		}, finish},
		attack{"no-name=value", func(*rand.Rand) []byte { return []byte("request=smtpd_access_policy\nrecipient\n\n") }, finish},
		attack{"empty-name", func(*rand.Rand) []byte { return []byte("=x\n\n") }, finish},
		attack{"nul", func(*rand.Rand) []byte { return []byte("request=smtpd_access_policy\nrecipient=x\x00@example.com\n\n") }, finish},
		attack{"empty-request", func(*rand.Rand) []byte { return []byte("\n") }, finish},
		attack{"wrong-request", func(*rand.Rand) []byte { return []byte("request=junk\nrecipient=x@example.com\n\n") }, finish},
		attack{"unterminated", func(*rand.Rand) []byte { return []byte(strings.TrimSuffix(validPolicy, "\n")) }, finish},
		attack{"cut-and-dropped", func(r *rand.Rand) []byte { return cut(r, []byte(validPolicy)) }, drop},
		attack{"cut-and-stalled", func(r *rand.Rand) []byte { return cut(r, []byte(validPolicy)) }, hold},
		attack{"valid-then-junk", func(r *rand.Rand) []byte { return []byte(validPolicy + line(r) + "\n\n") }, finish},
	)
}

func socketmapAttacks() []attack {
	ns := func(s string) []byte { return []byte(fmt.Sprintf("%d:%s,", len(s), s)) }
	valid := ns(validSocketmap)
	return append(common(),
		attack{"huge-length", func(r *rand.Rand) []byte {
			return []byte([]string{"999999999:", "4294967296:", "18446744073709551617:", "99999999999999999999999:"}[r.IntN(4)] + "transport x")
		}, finish},
		attack{"over-limit-length", func(r *rand.Rand) []byte { return []byte(fmt.Sprintf("%d:transport x", 64<<10+1+r.IntN(1<<20))) }, finish},
		attack{"endless-digits", func(r *rand.Rand) []byte { return bytes.Repeat([]byte("1"), 10+r.IntN(100000)) }, finish},
		attack{"truncated", func(r *rand.Rand) []byte { return cut(r, valid) }, finish},
		attack{"truncated-and-dropped", func(r *rand.Rand) []byte { return cut(r, valid) }, drop},
		attack{"truncated-and-stalled", func(r *rand.Rand) []byte { return cut(r, valid) }, hold},
		attack{"no-comma", func(*rand.Rand) []byte { return []byte("3:abcX") }, finish},
		attack{"no-length", func(*rand.Rand) []byte { return []byte(":transport x,") }, finish},
		attack{"bad-length", func(*rand.Rand) []byte { return []byte("1x:a,") }, finish},
		attack{"empty", func(*rand.Rand) []byte { return []byte("0:,") }, finish},
		attack{"no-key", func(*rand.Rand) []byte { return ns("transport") }, finish},
		attack{"empty-key", func(*rand.Rand) []byte { return ns("transport ") }, finish},
		attack{"valid-then-junk", func(r *rand.Rand) []byte { return append(ns(validSocketmap), randomBytes(r, 1+r.IntN(64))...) }, finish},
	)
}
