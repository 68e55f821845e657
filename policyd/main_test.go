package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
	"github.com/mxdetour/mxdetour/policyd/policydtest"
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
	srv := dnstest.New(t, policydtest.Zone())
	srv.SetFault("hang.mxd", dnstest.Timeout)
	cfg, policy, smap := policydtest.WriteConfig(t, srv.Addr(), "")
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
	srv := dnstest.New(t, policydtest.Zone())
	cfg, _, smap := policydtest.WriteConfig(t, srv.Addr(), "")
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
