// Package wiretest builds throwaway Postfix instances for tests of wire:
// the distribution's stock main.cf and master.cf (Debian's, with its
// chrooted services and its "relay" transport) in a directory of their
// own, with a queue and data directory beside them. The instance is never
// started; postconf, postfix check and postmap work on it.
package wiretest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/postfix"
)

// The stock files, Debian's first. Debian's package installs a master.cf
// only under /etc/postfix; /usr/share/postfix holds the pristine copy.
var (
	stockMain   = []string{"/usr/share/postfix/main.cf.debian", "/usr/share/postfix/main.cf.dist", "/etc/postfix/main.cf.proto"}
	stockMaster = []string{"/usr/share/postfix/master.cf.dist", "/etc/postfix/master.cf.proto", "/etc/postfix/master.cf"}
)

// Instance is one throwaway Postfix configuration.
type Instance struct {
	t     testing.TB
	Dir   string // holds conf/, queue/, data/
	Conf  string // the config directory: main.cf, master.cf
	Queue string // queue_directory
}

// New builds an instance from the stock files, with mainExtra appended
// to main.cf and masterExtra to master.cf. It skips the test, saying why,
// where Postfix is missing or the test does not run as root (postfix
// check needs root, and the data directory belongs to postfix).
func New(t testing.TB, mainExtra, masterExtra string) *Instance {
	t.Helper()
	if _, err := Command("postconf"); err != nil {
		t.Skip("Postfix is not installed (apt-get install postfix): ", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("postfix check needs root")
	}
	main, master := first(t, stockMain), first(t, stockMaster)
	dir := t.TempDir()
	// Postfix's daemons and postfix check want the path readable.
	must(t, os.Chmod(dir, 0o755))
	in := &Instance{t: t, Dir: dir, Conf: filepath.Join(dir, "conf"), Queue: filepath.Join(dir, "queue")}
	for _, d := range []string{"conf", "queue", "data"} {
		must(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	if out, err := exec.Command("chown", "postfix:postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Skipf("no postfix user: chown: %v: %s", err, out)
	}
	// Where a real server keeps its spool, logs and name; nothing here
	// listens or delivers.
	main = append(main, []byte("\n# test instance\nqueue_directory = "+in.Queue+"\ndata_directory = "+filepath.Join(dir, "data")+
		"\nmaillog_file = "+filepath.Join(dir, "maillog")+"\nmaillog_file_prefixes = "+dir+
		"\nmyhostname = mta.test.invalid\ninet_interfaces = loopback-only\n"+mainExtra)...)
	master = append(master, []byte(masterExtra)...)
	must(t, os.WriteFile(filepath.Join(in.Conf, "main.cf"), main, 0o644))
	must(t, os.WriteFile(filepath.Join(in.Conf, "master.cf"), master, 0o644))
	// Postfix's commands wait until a freshly written main.cf is about
	// two seconds old; this one was written long ago as far as they know.
	past := time.Now().Add(-time.Minute)
	for _, f := range []string{"main.cf", "master.cf"} {
		must(t, os.Chtimes(filepath.Join(in.Conf, f), past, past))
	}
	return in
}

func first(t testing.TB, paths []string) []byte {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	t.Skipf("none of Postfix's stock files %s is installed", strings.Join(paths, ", "))
	return nil
}

// Command finds a Postfix command in PATH or /usr/sbin.
func Command(name string) (string, error) { return postfix.Command(name) }

// Postconf runs postconf on the instance and returns its standard output;
// anything on standard error (a warning) fails the test.
func (in *Instance) Postconf(args ...string) string {
	in.t.Helper()
	bin, err := Command("postconf")
	if err != nil {
		in.t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-c", in.Conf}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		in.t.Fatalf("postconf %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// Param is one parameter's value as written (postconf -h).
func (in *Instance) Param(name string) string {
	in.t.Helper()
	return strings.TrimSuffix(in.Postconf("-h", name), "\n")
}

// Options are master.cf's -o options, "service/type/name" -> value.
func (in *Instance) Options() map[string]string {
	in.t.Helper()
	return pairs(in.Postconf("-P"))
}

// Fields are master.cf's fields, "service/type/field" -> value; a service
// named twice shows once (the count is in Entries).
func (in *Instance) Fields() map[string]string {
	in.t.Helper()
	return pairs(in.Postconf("-F"))
}

// Entries counts master.cf's entries for service/type.
func (in *Instance) Entries(key string) int {
	in.t.Helper()
	return strings.Count(in.Postconf("-F"), "\n"+key+"/service = ")
}

func pairs(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, " ="); ok {
			m[k] = strings.TrimPrefix(v, " ")
		}
	}
	return m
}

// File is a file's bytes and modification time.
type File struct {
	Bytes []byte
	Mod   time.Time
}

// MkPrivate makes the queue's private directory as Postfix would (owned
// by postfix, mode 0700), for a test's unix socket, and returns its path.
func (in *Instance) MkPrivate() string {
	in.t.Helper()
	p := filepath.Join(in.Queue, "private")
	must(in.t, os.Mkdir(p, 0o700))
	if out, err := exec.Command("chown", "postfix", p).CombinedOutput(); err != nil {
		in.t.Fatalf("chown postfix %s: %v: %s", p, err, out)
	}
	return p
}

// Snapshot is main.cf and master.cf as they are now.
func (in *Instance) Snapshot() map[string]File {
	in.t.Helper()
	s := map[string]File{}
	for _, f := range []string{"main.cf", "master.cf"} {
		p := filepath.Join(in.Conf, f)
		b, err := os.ReadFile(p)
		must(in.t, err)
		fi, err := os.Stat(p)
		must(in.t, err)
		s[f] = File{b, fi.ModTime()}
	}
	return s
}

// SameBytes fails the test where a file's bytes differ from the snapshot;
// with mtime, where its modification time does too.
func (in *Instance) SameBytes(before map[string]File, mtime bool) {
	in.t.Helper()
	for f, b := range in.Snapshot() {
		if !bytes.Equal(b.Bytes, before[f].Bytes) {
			in.t.Errorf("%s changed:\n--- before\n%s\n--- now\n%s", f, before[f].Bytes, b.Bytes)
		}
		if mtime && !b.Mod.Equal(before[f].Mod) {
			in.t.Errorf("%s was written (mtime %s, was %s)", f, b.Mod, before[f].Mod)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
