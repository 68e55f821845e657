package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// TestBinary runs mxdetour-milter as a postmaster does: keygen, a config
// with the key, a message through the milter protocol, metrics, and a
// reload with a broken key file that keeps the running keys.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mxdetour-milter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "keygen", "-domain", "example.org", "-selector", "ed", "-algorithm", "ed25519", "-dir", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), `ed._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=`) {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	key := filepath.Join(dir, "example.org.ed.key")
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	mport, lport := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(dir, "mxdetour.toml")
	write := func(keyFile string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("[milter]\nlisten = \"127.0.0.1:%d\"\n[metrics]\nmilter_listen = \"127.0.0.1:%d\"\n[[milter.dkim.keys]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey_file = %q\n", lport, mport, keyFile)), 0o644)
	}
	write(key)
	if out, err := exec.Command(bin, "-check-config", "-config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK (1 DKIM keys)") {
		t.Fatalf("-check-config: %v %s", err, out)
	}
	cmd := exec.Command(bin, "-config", cfg)
	out := &testutil.LockedBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Log(out.String())
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("milter not listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	signed := func() int {
		macros := milter.NewMacroBag()
		macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
		s, err := milter.NewClient("tcp", addr).Session(macros)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.Conn("localhost", milter.FamilyInet, 1, "127.0.0.1")
		s.Helo("localhost")
		s.Mail("<a@example.org>", "")
		s.Rcpt("<b@partner.mxd>", "")
		s.DataStart()
		s.HeaderField("From", " a@example.org", nil)
		s.HeaderEnd()
		mods, _, err := s.BodyReadFrom(strings.NewReader("hi\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range mods {
			if m.Type == milter.ActionInsertHeader {
				n++
			}
		}
		return n
	}
	if n := signed(); n != 1 {
		t.Errorf("%d signatures, want 1", n)
	}
	// A broken key at reload: the old key stays in use.
	broken := filepath.Join(dir, "broken.key")
	os.WriteFile(broken, []byte("not a key"), 0o600)
	write(broken)
	cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; !strings.Contains(out.String(), "reload failed") && i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "reload failed; keeping the running configuration and keys") {
		t.Errorf("no reload failure logged:\n%s", out.String())
	}
	if n := signed(); n != 1 {
		t.Errorf("after a failed reload: %d signatures, want 1", n)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"mxdetour_milter_signed_total 2", "mxdetour_milter_message_seconds_count 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
