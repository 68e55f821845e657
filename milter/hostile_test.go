package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// Issue #10: hostile input never stops the daemon. Each reproduction goes
// to the real binary over loopback TCP; after each, the daemon must still
// be running and sign a message in a fresh session.

var (
	hostileBuild sync.Once
	hostileBin   string
	hostileErr   error
)

// daemon is a running mxdetour-milter with one Ed25519 key for example.org.
type milterProc struct {
	addr   string
	cmd    *exec.Cmd
	out    *testutil.LockedBuffer
	exited chan struct{}
}

// startDaemon builds the binary once per test run and starts it, under
// prefix (e.g. prlimit) when given.
func startDaemon(t *testing.T, prefix ...string) *milterProc {
	t.Helper()
	hostileBuild.Do(func() {
		dir, err := os.MkdirTemp("", "mxdetour-milter-hostile-")
		if err != nil {
			hostileErr = err
			return
		}
		hostileBin = filepath.Join(dir, "mxdetour-milter")
		if out, err := exec.Command("go", "build", "-o", hostileBin, ".").CombinedOutput(); err != nil {
			hostileErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if hostileErr != nil {
		t.Fatal(hostileErr)
	}
	dir := t.TempDir()
	if out, err := exec.Command(hostileBin, "keygen", "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	d := &milterProc{addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), out: &testutil.LockedBuffer{}, exited: make(chan struct{})}
	cfg := filepath.Join(dir, "mxdetour.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = %q\n[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey_file = %q\n",
		d.addr, filepath.Join(dir, "example.org.ed.key"))), 0o644)
	args := append(prefix, hostileBin, "-config", cfg)
	d.cmd = exec.Command(args[0], args[1:]...)
	d.cmd.Stderr = d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.exited
		if t.Failed() {
			t.Log(d.out.String())
		}
	})
	testutil.Eventually(t, "the milter listening", func() bool { return canDial(d.addr) })
	return d
}

// alive fails the test if the daemon has exited.
func (d *milterProc) alive(t *testing.T, after string) {
	t.Helper()
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited after %s: %v", after, d.cmd.ProcessState)
	default:
	}
}

// signs runs a whole message through a fresh session with go-milter's
// client and fails unless it comes back signed once.
func (d *milterProc) signs(t *testing.T, after string) {
	t.Helper()
	d.alive(t, after)
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
	s, err := milter.NewClient("tcp", d.addr).Session(macros)
	if err != nil {
		t.Fatalf("after %s: no session: %v", after, err)
	}
	defer s.Close()
	for i, step := range []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Conn("localhost", milter.FamilyInet, 1, "127.0.0.1") },
		func() (*milter.Action, error) { return s.Helo("localhost") },
		func() (*milter.Action, error) { return s.Mail("<a@example.org>", "") },
		func() (*milter.Action, error) { return s.Rcpt("<b@partner.mxd>", "") },
		s.DataStart,
		func() (*milter.Action, error) { return s.HeaderField("From", " a@example.org", nil) },
		s.HeaderEnd,
	} {
		if act, err := step(); err != nil || act.Type != milter.ActionContinue {
			t.Fatalf("after %s: step %d: %+v %v", after, i, act, err)
		}
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader("hi\r\n"))
	n := 0
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader && m.HeaderName == "DKIM-Signature" {
			n++
		}
	}
	if err != nil || act.Type != milter.ActionAccept || n != 1 {
		t.Fatalf("after %s: %d signatures, %+v, %v; want 1 and accept", after, n, act, err)
	}
}

// rss returns the daemon's resident memory in bytes.
func (d *milterProc) rss(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func frame(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

var (
	negotiation = frame('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x10\x0f\x7f") // no SMFIP_NR_*: an answer to every packet
	connectPkt  = frame('C', "client.example\x004\x00\x19127.0.0.1\x00")
	mailPkt     = frame('M', "<a@example.org>\x00")
)

// rawConn dials the daemon and, if negotiate, does the option negotiation.
func rawConn(t *testing.T, addr string, negotiate bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if negotiate {
		c.Write(negotiation)
		readAnswer(t, c, 'O')
	}
	return c
}

func readAnswer(t *testing.T, c net.Conn, want byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[:4]))-1); err != nil {
		t.Fatal(err)
	}
	if h[4] != want {
		t.Fatalf("answer %q, want %q", h[4], want)
	}
}

// closedWithin reports whether the daemon closed c within wait.
func closedWithin(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadAll(c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestBinarySurvivesHostileInput(t *testing.T) {
	d := startDaemon(t)
	d.signs(t, "start")
	for _, tc := range []struct {
		name      string
		negotiate bool
		send      []byte
	}{
		{"a zero-length packet before negotiation", false, []byte{0, 0, 0, 0}},
		{"a zero-length packet after negotiation", true, []byte{0, 0, 0, 0}},
		{"CONNECT without NUL", true, frame('C', "client.example")},
		{"MAIL without NUL", true, append(append([]byte{}, connectPkt...), frame('M', "<a@example.org>")...)},
		{"RCPT without NUL", true, append(append(append([]byte{}, connectPkt...), mailPkt...), frame('R', "<b@partner.mxd>")...)},
		{"a 512 MiB length prefix after negotiation", true, []byte{0x1f, 0xff, 0xff, 0xff}},
	} {
		c := rawConn(t, d.addr, tc.negotiate)
		c.Write(tc.send)
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s: connection still open", tc.name)
		}
		d.signs(t, tc.name)
	}
	if strings.Contains(d.out.String(), "panic") {
		t.Errorf("a panic was logged")
	}
}

// TestBinaryLengthPrefixesCostNothing opens 40 connections that each
// announce a 512 MiB packet before negotiation (4.2 GB before the fix).
func TestBinaryLengthPrefixesCostNothing(t *testing.T) {
	d := startDaemon(t)
	before := d.rss(t)
	var conns []net.Conn
	for range 40 {
		c := rawConn(t, d.addr, false)
		c.Write([]byte{0x1f, 0xff, 0xff, 0xff, 'O'})
		conns = append(conns, c)
	}
	for i, c := range conns {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("connection %d still open", i)
		}
	}
	if after := d.rss(t); after > before+32<<20 {
		t.Errorf("resident memory grew from %d to %d MiB", before>>20, after>>20)
	}
	d.signs(t, "40 connections announcing 512 MiB each")
}

// TestBinaryRepeatedEndOfHeaders sends 20,000 end-of-header packets in
// one message (437 MB left behind before the fix).
func TestBinaryRepeatedEndOfHeaders(t *testing.T) {
	d := startDaemon(t)
	d.signs(t, "start")
	before := d.rss(t)
	c := rawConn(t, d.addr, true)
	for _, p := range [][]byte{connectPkt, mailPkt, frame('R', "<b@partner.mxd>\x00"), frame('T', ""), frame('L', "From\x00 a@example.org\x00")} {
		c.Write(p)
		readAnswer(t, c, 'c')
	}
	const n = 20000
	go func() {
		eoh := frame('N', "")
		for range n {
			if _, err := c.Write(eoh); err != nil {
				return
			}
		}
	}()
	for range n {
		readAnswer(t, c, 'c')
	}
	if after := d.rss(t); after > before+64<<20 {
		t.Errorf("resident memory grew from %d to %d MiB over %d end-of-header packets", before>>20, after>>20, n)
	}
	d.signs(t, "20,000 end-of-header packets")
}

// TestBinaryOutOfFileDescriptors runs the daemon with 40 file descriptors
// and holds 60 idle sessions open: accepting fails with EMFILE, which
// must neither stop the daemon nor lock a new session out.
func TestBinaryOutOfFileDescriptors(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("no prlimit")
	}
	d := startDaemon(t, prlimit, "--nofile=40:40")
	for range 60 {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write(negotiation)
	}
	start := time.Now()
	d.signs(t, "running out of file descriptors")
	t.Logf("a new session was served %v after the descriptors ran out", time.Since(start))
	if !strings.Contains(d.out.String(), "out of file descriptors") {
		t.Errorf("EMFILE was never hit: the test proves nothing")
	}
	d.alive(t, "running out of file descriptors")
}
