package dkim

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"strings"
	"testing"
)

// An unreadable key gets the chown that mends it; other errors get no hint.
func TestReadHint(t *testing.T) {
	err := &fs.PathError{Op: "open", Path: "/etc/mxdetour/dkim/k.key", Err: fs.ErrPermission}
	who := DaemonUser
	if u, _ := user.Current(); u != nil && u.Uid != "0" {
		who = u.Username
	}
	if h := ReadHint("/etc/mxdetour/dkim/k.key", err); !strings.Contains(h, "chown "+who+" /etc/mxdetour/dkim/k.key") {
		t.Errorf("hint %q", h)
	}
	if h := ReadHint("/x", errors.Join(fs.ErrNotExist)); h != "" {
		t.Errorf("a missing file got hint %q", h)
	}
}

func TestDefaultOwner(t *testing.T) {
	_, err := user.Lookup(DaemonUser)
	want := ""
	if err == nil && os.Geteuid() == 0 {
		want = DaemonUser
	}
	if got := DefaultOwner(); got != want {
		t.Errorf("DefaultOwner() = %q, want %q", got, want)
	}
}
