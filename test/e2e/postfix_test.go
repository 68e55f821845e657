package e2e

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// postfix is a throwaway Postfix instance: private config and queue
// directories, listening on loopback only, logging to a file (there is no
// syslog here: maillog_file, Postfix ≥ 3.4).
type postfix struct {
	t       *testing.T
	dir     string
	conf    string
	port    int
	maillog string
}

// postfixOptions are the parameters a scenario varies.
type postfixOptions struct {
	DirectPort   int      // "direct delivery": Postfix's default route (relayhost)
	DirectHost   string   // its loopback address ("" = 127.0.0.1)
	Extra        []string // more main.cf lines
	MasterExtra  string   // more master.cf lines
	SmtpdOpts    []string // -o options of the smtpd service
	SoftBounce5x bool     // defer 5xx replies of the default smtp transport, as a retrying MTA sees blocks
}

func startPostfix(t *testing.T, o postfixOptions) *postfix {
	t.Helper()
	dir, err := os.MkdirTemp("", "mxdetour-e2e-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's daemons run as the postfix user: they must reach these paths.
	must(t, os.Chmod(dir, 0o755))
	p := &postfix{t: t, dir: dir, conf: filepath.Join(dir, "conf"), port: testutil.FreePort(t), maillog: filepath.Join(dir, "maillog")}
	for _, d := range []string{"conf", "queue", "data"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	run(t, "chown", "postfix:postfix", filepath.Join(dir, "data"))
	must(t, os.Chmod(filepath.Join(dir, "data"), 0o700))

	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test.invalid
mydomain = test.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# The test's XCLIENT client addresses may relay; the milter, not Postfix,
# decides what happens to them.
mynetworks = 127.0.0.0/8, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [%[3]s]:%[2]d
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
smtputf8_enable = no
biff = no
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
smtp_connection_cache_on_demand = no
delay_warning_time = 0
`, dir, o.DirectPort, cmp.Or(o.DirectHost, "127.0.0.1"))
	main = dropOverridden(main, o.Extra) + strings.Join(o.Extra, "\n") + "\n"
	smtpOpts, smtpdOpts := "", ""
	if o.SoftBounce5x {
		smtpOpts = "\n  -o soft_bounce=yes"
	}
	for _, opt := range o.SmtpdOpts {
		smtpdOpts += "\n  -o " + opt
	}
	masterCf := func() string {
		return fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd%s
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp%s
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
%s`, p.port, smtpdOpts, smtpOpts, o.MasterExtra)
	}
	must(t, os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(main), 0o644))
	// `postfix start` runs the fatal checks of `postfix check` (the full
	// check costs seconds per instance here). A port that FreePort found
	// free may be taken by a parallel test before master binds it: then
	// take another.
	for try := 1; ; try++ {
		must(t, os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(masterCf()), 0o644))
		out, err := exec.Command("postfix", "-c", p.conf, "start").CombinedOutput()
		if err == nil {
			break
		}
		log, _ := os.ReadFile(p.maillog)
		if try < 3 && bytes.Contains(log, []byte("Address already in use")) {
			p.port = testutil.FreePort(t)
			continue
		}
		t.Fatalf("postfix start: %v\n%s\nmaillog:\n%s", err, out, log)
	}
	t.Cleanup(func() {
		_ = exec.Command("postfix", "-c", p.conf, "stop").Run()
		if t.Failed() {
			log, _ := os.ReadFile(p.maillog)
			t.Logf("maillog of %s:\n%s", dir, log)
		}
		os.RemoveAll(dir)
	})
	p.waitListening()
	return p
}

// dropOverridden returns main.cf text without its lines of parameters
// that extra sets again. Postfix would take the last, but every daemon
// warns of a duplicate at start, postlogd too, to its own socket before
// it reads it: a dozen such warnings (net.unix.max_dgram_qlen is 10)
// deadlocked postlogd, and with it every process that logs.
func dropOverridden(main string, extra []string) string {
	set := map[string]bool{}
	for _, l := range extra {
		if name, _, ok := strings.Cut(l, "="); ok {
			set[strings.TrimSpace(name)] = true
		}
	}
	var kept []string
	for _, l := range strings.SplitAfter(main, "\n") {
		if name, _, ok := strings.Cut(l, "="); !ok || !set[strings.TrimSpace(name)] {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

func (p *postfix) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

func (p *postfix) waitListening() {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", p.addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(p.maillog)
	p.t.Fatalf("postfix did not listen on %s; maillog:\n%s", p.addr(), log)
}

// postsuper, postqueue and friends against this instance.
func (p *postfix) cmd(name string, args ...string) string {
	p.t.Helper()
	out, err := exec.Command(name, append([]string{"-c", p.conf}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Logf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

// flush asks Postfix to retry deferred mail now.
func (p *postfix) flush() { p.cmd("postqueue", "-f") }

// log returns the maillog so far.
func (p *postfix) log() string {
	b, _ := os.ReadFile(p.maillog)
	return string(b)
}

// waitLog waits until the maillog matches re and returns the match.
func (p *postfix) waitLog(re string, within time.Duration) string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var m string
	testutil.EventuallyWithin(p.t, within, "maillog matching "+re, func() bool {
		m = rx.FindString(p.log())
		return m != ""
	})
	return m
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
