//go:build linux

package pickup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestMain lets the test binary play a process of another uid (see
// TestAbstractSocket): with PICKUP_TEST_ROLE=ask it asks policyd at
// PICKUP_TEST_ADDR as the milter does and prints the action, or the
// error; with PICKUP_TEST_ROLE=squat it binds PICKUP_TEST_ADDR, says so
// and answers every request with a HOLD until killed.
func TestMain(m *testing.M) {
	addr := os.Getenv("PICKUP_TEST_ADDR")
	switch os.Getenv("PICKUP_TEST_ROLE") {
	case "":
		os.Exit(m.Run())
	case "ask":
		c, err := NewClient(addr)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		action, err := c.Ask(ctx, &Request{QueueID: "C1", Sender: "www-data@example.net", LocalUser: "www-data",
			Recipients: 1, Domains: []string{"gmail.com"}})
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("action:", action)
		}
	case "squat":
		ln, err := net.Listen("unix", strings.TrimPrefix(addr, "unix:"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\n" {
						c.Write([]byte("action=HOLD squatted\n\n"))
					}
				}
			}()
		}
	}
	os.Exit(0)
}

// TestAbstractSocket: the packaged policy socket for the milter,
// ListenStream=@mxdetour-policy, as systemd passes it to mxdetour-policyd
// (the test holds it, as root, and passes it as "policy"). policyd runs as
// a user of its own, as mxdetour does; a process of that user (the
// milter) is answered and counted, one of nobody is refused unanswered
// and not counted, and the milter's pickup Counter, dialing
// "unix:@name", counts and is held past the limit. A name bound by
// another user first (a squatter) is never asked.
func TestAbstractSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("processes of other uids need root")
	}
	const daemonUID, nobody = 64123, 65534
	dir, err := os.MkdirTemp("", "pickup-abstract-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755)) // the other uids run binaries from it
	policyd := filepath.Join(dir, "mxdetour-policyd")
	if out, err := exec.Command("go", "build", "-o", policyd, "github.com/mxdetour/mxdetour/policyd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	self, err := os.Executable()
	must(t, err)
	data, err := os.ReadFile(self)
	must(t, err)
	client := filepath.Join(dir, "client")
	must(t, os.WriteFile(client, data, 0o755))
	state := filepath.Join(dir, "state")
	must(t, os.Mkdir(state, 0o750))
	must(t, os.Chown(state, daemonUID, daemonUID))

	name := fmt.Sprintf("@mxdetour-policy-test-%d", os.Getpid())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if got := ln.Addr().String(); got != name {
		t.Fatalf("the abstract socket is named %q, want %q", got, name)
	}
	cfg := filepath.Join(dir, "mxdetour.toml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
[dns]
servers = [%q]
[domains]
from_postfix = false
[policyd]
policy_listen = "unix:%s/policy.sock"
socketmap_listen = ""
[learn]
source = "file"
log_file = %q
state_file = %q
[[limits]]
key = "local_user"
max = 2
window = "1h"
`, dnstest.New(t, dnstest.Zone{}).Addr(), dir, filepath.Join(state, "mail.log"), filepath.Join(state, "state.json"))), 0o644))

	cmd := daemontest.Command(t, policyd, []string{"-config", cfg},
		daemontest.Socket{Name: "policy", Ln: ln.(*net.UnixListener)})
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: daemonUID, Gid: daemonUID}}
	p := daemontest.Start(t, cmd)
	listening := `"socket": "policy", "addr": "unix:` + name + `", "from": "systemd"`
	testutil.EventuallyWithin(t, 20*time.Second, "policyd saying "+listening, func() bool { return strings.Contains(p.Output(), listening) })

	ask := func(uid uint32) string {
		t.Helper()
		cmd := exec.Command(client, "-test.run=^$")
		cmd.Env = []string{"PICKUP_TEST_ROLE=ask", "PICKUP_TEST_ADDR=unix:" + name}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %d: %v\n%s", uid, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// policyd's own user, as the milter is: answered, counted (1 of 2).
	if got := ask(daemonUID); got != "action: DUNNO" {
		t.Errorf("policyd's own user: %q, want DUNNO", got)
	}
	// Any other local user: closed unanswered, not counted.
	if got := ask(nobody); !strings.HasPrefix(got, "error: ") {
		t.Errorf("nobody: %q, want the connection closed unanswered", got)
	}
	// The milter's Counter (root here): counted as 2 of 2, then held.
	c := newTestCounter(t, "unix:"+name, zap.NewNop())
	c.timeout = 10 * time.Second
	c.users.lookup = func(uid string) (*user.User, error) { return &user.User{Username: "www-data"}, nil }
	if out := c.Count(msg("Q1")); !out.Counted || out.Held != "" || out.LocalUser != "www-data" {
		t.Errorf("second of two: %+v (nobody's request counted?)", out)
	}
	if out := c.Count(msg("Q2")); !out.Counted || out.Held == "" {
		t.Errorf("third of two: %+v, want held", out)
	}
	if out := p.Output(); !strings.Contains(out, "refused a connection") || !strings.Contains(out, fmt.Sprintf(`"uid": %d`, nobody)) {
		t.Errorf("policyd did not log the refusal of uid %d:\n%s", nobody, out)
	}

	// A name another user bound first: the milter does not ask it.
	squatted := fmt.Sprintf("unix:@mxdetour-policy-squat-%d", os.Getpid())
	sq := exec.Command(client, "-test.run=^$")
	sq.Env = []string{"PICKUP_TEST_ROLE=squat", "PICKUP_TEST_ADDR=" + squatted}
	sq.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	stdout, err := sq.StdoutPipe()
	must(t, err)
	must(t, sq.Start())
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("squatter: %q, %v", line, err)
	}
	core, logs := observer.New(zap.WarnLevel)
	sc := newTestCounter(t, squatted, zap.New(core))
	if out := sc.Count(msg("Q3")); out.Counted || out.Held != "" {
		t.Errorf("squatted name: %+v, want not asked", out)
	}
	if w := logs.All(); len(w) != 1 || !strings.Contains(fmt.Sprint(w[0].Context), fmt.Sprintf("bound by uid %d", nobody)) {
		t.Errorf("warnings: %+v, want one naming uid %d", w, nobody)
	}
	// The squatter answers a client that does not check (it is there).
	conn, err := net.Dial("unix", strings.TrimPrefix(squatted, "unix:"))
	must(t, err)
	conn.Close()
}

// TestClientAbstract: "unix:@name" is an abstract socket, as Go names it.
func TestClientAbstract(t *testing.T) {
	c, err := NewClient("unix:@mxdetour-policy")
	if err != nil {
		t.Fatal(err)
	}
	if c.network != "unix" || c.address != "@mxdetour-policy" || c.Addr() != "unix:@mxdetour-policy" {
		t.Errorf("NewClient: %q %q %q", c.network, c.address, c.Addr())
	}
	p := &policydStub{answer: "DUNNO"}
	name := fmt.Sprintf("@mxdetour-pickup-test-%d", os.Getpid())
	if got := p.serve(t, "unix", name); got != name {
		t.Fatalf("listening on %q", got)
	}
	if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file %s was made: %v", name, err)
	}
	cnt := newTestCounter(t, "unix:"+name, zap.NewNop())
	if out := cnt.Count(msg("Q1")); !out.Counted {
		t.Errorf("%+v", out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
