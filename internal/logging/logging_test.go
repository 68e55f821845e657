package logging

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
)

func TestNew(t *testing.T) {
	for _, c := range []config.Log{{Level: "debug", Format: "console"}, {Level: "warn", Format: "json"}} {
		log, lvl, err := New(c)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if lvl.String() != c.Level {
			t.Errorf("level %s, want %s", lvl, c.Level)
		}
		if err := SetLevel(lvl, "error"); err != nil || log.Core().Enabled(zap.WarnLevel) {
			t.Errorf("SetLevel did not take effect: %v", err)
		}
	}
	if _, _, err := New(config.Log{Level: "loud", Format: "console"}); err == nil {
		t.Error("bad level accepted")
	}
	if _, _, err := New(config.Log{Level: "info", Format: "xml"}); err == nil {
		t.Error("bad format accepted")
	}
}

// TestJournal: with stderr going to the journal each line carries its
// syslog priority and no time of its own; elsewhere neither.
func TestJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	if !toJournal(stream, f) || toJournal("1:2", f) || toJournal("", f) || toJournal(stream, os.Stdin) {
		t.Fatal("toJournal does not match the descriptor")
	}
	log, _, err := newLogger(config.Log{Level: "debug", Format: "console"}, f, true)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("decided", zap.String("route", "relay"))
	log.Warn("our address is listed")
	log.Error("reload failed")
	log.Debug("lookup")
	log.Sync() //nolint:errcheck
	out, _ := os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"<6>info\tdecided", "<4>warn\tour address is listed", "<3>error\treload failed", "<7>debug\tlookup"}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s", out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start %q (priority, no time)", i, lines[i], w)
		}
	}
}
