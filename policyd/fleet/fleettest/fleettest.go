// Package fleettest runs a real redis-server on a loopback port for the
// fleet's tests: no persistence, stopped and started again on the same
// port to play an outage (it then comes back empty, as a Redis without
// persistence does).
package fleettest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Redis is one redis-server.
type Redis struct {
	t    testing.TB
	bin  string
	Port int

	mu  sync.Mutex
	cmd *exec.Cmd
	out *testutil.LockedBuffer
}

// Start runs redis-server on a free loopback port until the test ends; it
// skips the test, saying why, when redis-server is not installed.
func Start(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
	}
	r := &Redis{t: t, bin: bin, Port: testutil.FreePort(t)}
	r.Restart()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("redis-server output:\n%s", r.out.String())
		}
	})
	return r
}

// URL is the fleet's redis_url for this server.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.Port) }

// Addr is host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// Restart starts the server (again, empty) and waits until it answers.
func (r *Redis) Restart() {
	r.t.Helper()
	r.mu.Lock()
	if r.cmd != nil {
		r.mu.Unlock()
		return
	}
	r.out = &testutil.LockedBuffer{}
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	err := r.cmd.Start()
	r.mu.Unlock()
	if err != nil {
		r.t.Fatal(err)
	}
	r.waitPing()
}

// waitPing waits until the server on r.Port answers PING.
func (r *Redis) waitPing() {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Do("PING") != "PONG" {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on port %d does not answer", r.Port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (an outage, not a shutdown).
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Do sends one command (RESP, no arguments with spaces or CRLF) and
// returns the first line of the reply without its type byte; "" when the
// server does not answer.
func (r *Redis) Do(args ...string) string {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return ""
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || len(line) < 3 {
		return ""
	}
	return strings.TrimRight(line[1:], "\r\n")
}

// run starts cmd until the test ends (killed then), showing its output
// when the test failed.
func run(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	out := &testutil.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// Sentinel is a redis-server in Sentinel mode watching one master.
type Sentinel struct {
	Port int
}

// StartSentinel runs a Sentinel on a free loopback port that monitors
// master under the name mymaster, until the test ends, and waits until it
// reports the master's address.
func StartSentinel(t testing.TB, master *Redis) *Sentinel {
	t.Helper()
	s := &Sentinel{Port: testutil.FreePort(t)}
	conf := filepath.Join(t.TempDir(), "sentinel.conf") // Sentinel rewrites it
	data := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode yes\nsentinel monitor mymaster 127.0.0.1 %d 1\n", s.Port, master.Port)
	if err := os.WriteFile(conf, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "sentinel", exec.Command(master.bin, conf, "--sentinel"))
	probe := &Redis{t: t, Port: s.Port}
	deadline := time.Now().Add(10 * time.Second)
	for probe.Do("SENTINEL", "get-master-addr-by-name", "mymaster") == "" {
		if time.Now().After(deadline) {
			t.Fatalf("sentinel on port %d does not report mymaster", s.Port)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// URL is the fleet's redis_url through this Sentinel.
func (s *Sentinel) URL() string {
	return fmt.Sprintf("redis://127.0.0.1:%d/0?master_name=mymaster", s.Port)
}

// Cluster is a Redis Cluster of three masters, no replicas.
type Cluster struct {
	Ports []int
}

// StartCluster runs three redis-servers in cluster mode on free loopback
// ports (cluster bus ports too), joins them with redis-cli --cluster
// create, and waits until every node says the cluster is ok. It skips the
// test when redis-cli is not installed.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli is not installed (it comes with redis-server's redis-tools)")
	}
	dir := t.TempDir()
	c := &Cluster{}
	var addrs []string
	for range 3 {
		port, bus := testutil.FreePort(t), testutil.FreePort(t)
		run(t, fmt.Sprintf("redis-server %d", port), exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)), "--dir", dir,
			"--save", "", "--appendonly", "no"))
		(&Redis{t: t, Port: port}).waitPing()
		c.Ports = append(c.Ports, port)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	create := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range c.Ports {
		for {
			out, _ := exec.Command(cli, "-p", strconv.Itoa(p), "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: cluster not ok:\n%s", p, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// URL is the fleet's redis_url for the cluster: one node and the others
// as addr= parameters.
func (c *Cluster) URL() string {
	u := fmt.Sprintf("redis://127.0.0.1:%d", c.Ports[0])
	for i, p := range c.Ports[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += fmt.Sprintf("%saddr=127.0.0.1:%d", sep, p)
	}
	return u
}
