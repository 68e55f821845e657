package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

func listenNotify(t *testing.T) *daemontest.Notify {
	n := daemontest.ListenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	return n
}

// echoServer answers each connection with its name. With hang set, its
// accept loop blocks after the first connection (a hung server).
type echoServer struct {
	name     string
	hang     chan struct{}
	mu       sync.Mutex
	lns      []net.Listener
	closing  atomic.Bool
	shutdown atomic.Int32
}

func (s *echoServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			return err
		}
		fmt.Fprintf(c, "%s\n", s.name)
		c.Close()
		if s.hang != nil {
			<-s.hang
		}
	}
}

func (s *echoServer) Shutdown(context.Context) error {
	s.closing.Store(true)
	s.shutdown.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	return nil
}

func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(l)
}

func logger(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core())), logs
}

// start runs Run in the background; the returned function stops it (as
// SIGTERM would) and returns what Run returned.
func start(t *testing.T, o Options) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func freePort(t *testing.T) int { return testutil.FreePort(t) }

// TestNotifyReloadStop: READY=1 once serving, RELOADING=1 then READY=1
// around SIGHUP (with the reload called, and a failed or panicking one
// keeping the daemon up), STOPPING=1 and a drain at SIGTERM, Run
// returning nil.
func TestNotifyReloadStop(t *testing.T) {
	n := listenNotify(t)
	log, logs := logger(t)
	a, b := &echoServer{name: "a"}, &echoServer{name: "b"}
	pa, pb := freePort(t), freePort(t)
	var reloads atomic.Int32
	var reloadErr atomic.Value
	reloadErr.Store("")
	stopped := make(chan struct{})
	stop := start(t, Options{
		Sockets: []Socket{{Name: "a", Addr: addr(pa), Server: a}, {Name: "b", Addr: addr(pb), Server: b}, {Name: "off", Server: b}},
		Reload: func(context.Context) error {
			reloads.Add(1)
			switch reloadErr.Load().(string) {
			case "":
				return nil
			case "panic":
				panic("reload bug")
			default:
				return errors.New(reloadErr.Load().(string))
			}
		},
		Stop: func(context.Context) { close(stopped) },
		Log:  log,
	})
	ready := n.Next(t, "READY=1")
	if want := fmt.Sprintf("READY=1\nSTATUS=serving a on 127.0.0.1:%d, b on 127.0.0.1:%d", pa, pb); ready != want {
		t.Errorf("got %q, want %q", ready, want)
	}
	if got := ask(t, addr(pa)) + ask(t, addr(pb)); got != "ab" {
		t.Errorf("served %q, want ab", got)
	}

	for i, tc := range []struct{ reloadErr, status, log string }{
		{"", fmt.Sprintf("STATUS=serving a on 127.0.0.1:%d", pa), "reloaded"},
		{"bad key file", "STATUS=reload failed, running the previous configuration: bad key file", "reload failed; keeping the running configuration"},
		{"panic", "STATUS=reload failed, running the previous configuration: panic: reload bug", "reload failed; keeping the running configuration"},
	} {
		reloadErr.Store(tc.reloadErr)
		syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
		if m := n.Next(t, "RELOADING=1"); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
			t.Errorf("reload %d: %q lacks MONOTONIC_USEC", i, m)
		}
		if m := n.Next(t, "READY=1"); !strings.Contains(m, tc.status) {
			t.Errorf("reload %d: %q, want %q", i, m, tc.status)
		}
		if got := reloads.Load(); got != int32(i+1) {
			t.Errorf("reload %d: called %d times", i, got)
		}
		if logs.FilterMessage(tc.log).Len() == 0 {
			t.Errorf("reload %d: no %q logged", i, tc.log)
		}
	}
	if got := ask(t, addr(pa)); got != "a" {
		t.Errorf("after reloads: %q", got)
	}

	if err := stop(); err != nil {
		t.Errorf("Run after stop: %v", err)
	}
	n.Next(t, "STOPPING=1")
	if a.shutdown.Load() != 1 || b.shutdown.Load() != 1 {
		t.Errorf("Shutdown called %d and %d times, want once each", a.shutdown.Load(), b.shutdown.Load())
	}
	select {
	case <-stopped:
	default:
		t.Error("Stop was not called")
	}
	if _, err := net.Dial("tcp", addr(pa)); err == nil {
		t.Error("still accepting after stop")
	}
}

// TestSIGTERM: SIGTERM drains and Run returns nil, so the daemon exits 0.
func TestSIGTERM(t *testing.T) {
	n := listenNotify(t)
	log, _ := logger(t)
	s := &echoServer{name: "a"}
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{Sockets: []Socket{{Name: "a", Addr: "127.0.0.1:0", Server: s}}, Log: log})
	}()
	n.Next(t, "READY=1")
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	n.Next(t, "STOPPING=1")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if s.shutdown.Load() != 1 {
		t.Error("not drained")
	}
}

type failServer struct{}

func (failServer) Serve(net.Listener) error       { return errors.New("accept: too many open files") }
func (failServer) Shutdown(context.Context) error { return nil }

// TestServerFails: a server that stops serving ends Run with its error
// (exit 1: systemd restarts the daemon).
func TestServerFails(t *testing.T) {
	log, _ := logger(t)
	err := Run(context.Background(), Options{Sockets: []Socket{{Name: "a", Addr: "127.0.0.1:0", Server: &failServer{}}}, Log: log})
	if err == nil || !strings.Contains(err.Error(), "serving a on 127.0.0.1:") || !strings.Contains(err.Error(), "too many open files") {
		t.Errorf("Run = %v", err)
	}
}

// TestListenError: an address that cannot be bound is an error before
// READY=1.
func TestListenError(t *testing.T) {
	n := listenNotify(t)
	log, _ := logger(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = Run(context.Background(), Options{Sockets: []Socket{{Name: "a", Addr: busy.Addr().String(), Server: &echoServer{}}}, Log: log})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Run = %v", err)
	}
	if got := n.Mark(t); len(got) != 0 {
		t.Errorf("notified %q", got)
	}
}

// watchdogCase starts a daemon with WATCHDOG_USEC set, checks pings come
// while healthy, calls breakIt, and checks that the pings stop.
func watchdogCase(t *testing.T, health func(ctx context.Context) error, s *echoServer, breakIt func(addr string)) (*daemontest.Notify, *observer.ObservedLogs) {
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "400000") // a ping every 200ms, probes time out after 100ms
	t.Setenv("WATCHDOG_PID", fmt.Sprint(syscall.Getpid()))
	log, logs := logger(t)
	port := freePort(t)
	start(t, Options{Sockets: []Socket{{Name: "a", Addr: addr(port), Server: s}}, Health: health, Log: log})
	n.Next(t, "READY=1")
	for range 3 {
		n.Next(t, "WATCHDOG=1")
	}
	breakIt(addr(port))
	failed := func(k int) func() bool {
		return func() bool { return logs.FilterMessageSnippet("health probe failed").Len() >= k }
	}
	// Once a check has failed, every ping from before is in the socket.
	testutil.Eventually(t, "a failed health check", failed(1))
	n.Mark(t)
	testutil.Eventually(t, "three more failed checks", failed(4))
	for _, m := range n.Mark(t) {
		if strings.HasPrefix(m, "WATCHDOG=1") {
			t.Fatalf("pinged while unhealthy: %q", m)
		}
	}
	return n, logs
}

// TestWatchdogProbeFails: pings stop while the probe fails and come back
// when it passes again.
func TestWatchdogProbeFails(t *testing.T) {
	var failing atomic.Bool
	health := func(ctx context.Context) error {
		if failing.Load() {
			return errors.New("decision for watchdog@mxdetour.invalid: wrong answer")
		}
		return nil
	}
	n, logs := watchdogCase(t, health, &echoServer{name: "a"}, func(string) { failing.Store(true) })
	if logs.FilterFieldKey("error").FilterMessageSnippet("health probe failed").Len() == 0 {
		t.Error("the failure is not logged with its error")
	}
	failing.Store(false)
	n.Next(t, "WATCHDOG=1")
}

// TestWatchdogProbeHangs: a probe that never returns (a deadlocked
// decision) stops the pings, and no second probe is started beside it.
func TestWatchdogProbeHangs(t *testing.T) {
	var hung atomic.Bool
	var calls atomic.Int32
	release := make(chan struct{})
	health := func(ctx context.Context) error {
		if hung.Load() {
			calls.Add(1)
			<-release // ignores ctx, as a deadlock would
		}
		return nil
	}
	_, logs := watchdogCase(t, health, &echoServer{name: "a"}, func(string) { hung.Store(true) })
	if got := calls.Load(); got != 1 {
		t.Errorf("%d hung probes running, want 1", got)
	}
	if logs.FilterMessageSnippet("health probe failed").Filter(func(e observer.LoggedEntry) bool {
		return strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "has not returned")
	}).Len() == 0 {
		t.Error("no failure says the previous probe has not returned")
	}
	close(release)
}

// TestWatchdogAcceptLoopHangs: a server whose accept loop stops coming
// back to Accept stops the pings, even though its probe passes.
func TestWatchdogAcceptLoopHangs(t *testing.T) {
	s := &echoServer{name: "a", hang: make(chan struct{})}
	_, logs := watchdogCase(t, func(context.Context) error { return nil }, s, func(a string) { ask(t, a) })
	if logs.FilterMessageSnippet("health probe failed").Filter(func(e observer.LoggedEntry) bool {
		return strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "the accept loop of a on 127.0.0.1:")
	}).Len() == 0 {
		t.Error("no failure names the accept loop")
	}
	close(s.hang)
}

// TestStopDuringReload: SIGTERM during a reload that waits on something
// slow (a self-check against a dead blocklist) ends the reload through its
// context and stops; the signal is not held until the reload is done.
func TestStopDuringReload(t *testing.T) {
	n := listenNotify(t)
	log, logs := logger(t)
	p := freePort(t)
	cut := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			Sockets: []Socket{{Name: "a", Addr: addr(p), Server: &echoServer{name: "a"}}},
			Reload: func(ctx context.Context) error {
				<-ctx.Done() // slower than any stop
				cut <- ctx.Err()
				return ctx.Err()
			},
			Grace: time.Minute,
			Log:   log,
		})
	}()
	n.Next(t, "READY=1")
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	n.Next(t, "RELOADING=1")
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SIGTERM held by a reload under way")
	}
	if err := <-cut; err == nil {
		t.Error("the reload's context did not end at SIGTERM")
	}
	if logs.FilterMessage("a reload did not end when told to; stopping beside it").Len() != 0 {
		t.Error("waited out the grace period for the reload")
	}
}

// TestRestartOnlySlices: a setting whose value is a slice or struct with
// one compares by value; it made every reload panic when compared with !=.
func TestRestartOnlySlices(t *testing.T) {
	type fleet struct{ Hosts []string }
	got := RestartOnly(
		Setting{Key: "same", Was: []string{"a"}, Now: []string{"a"}},
		Setting{Key: "slice", Was: []string{"a"}, Now: []string{"a", "b"}},
		Setting{Key: "struct", Was: fleet{[]string{"x"}}, Now: fleet{[]string{"y"}}},
		Setting{Key: "samestruct", Was: fleet{[]string{"x"}}, Now: fleet{[]string{"x"}}},
	)
	if want := []string{"slice", "struct"}; !slices.Equal(got, want) {
		t.Errorf("RestartOnly = %v, want %v", got, want)
	}
}
