package logging

import (
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
