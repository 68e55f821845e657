package e2e

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
	"github.com/mxdetour/mxdetour/internal/testutil"
)

// spool is where the shipped unix drop-ins put the sockets; the test maps
// it to its own Postfix's queue directory.
const spool = "/var/spool/postfix"

// unitSockets makes the listening sockets that contrib/systemd's socket
// units make (unix sockets in Postfix's spool, the packaged default), as
// systemd does (root creates them, then sets SocketUser, SocketGroup and
// SocketMode), under queueDir instead of /var/spool/postfix. It returns
// them by FileDescriptorName.
func unitSockets(t *testing.T, queueDir string) map[string]daemontest.Socket {
	t.Helper()
	units, err := filepath.Glob("../../contrib/systemd/*.socket")
	if err != nil || len(units) != 3 {
		t.Fatalf("contrib/systemd: %d socket units (%v), want 3", len(units), err)
	}
	socks := map[string]daemontest.Socket{}
	for _, file := range units {
		unit := filepath.Base(file)
		keys := unitKeys(t, file)
		base := keys
		name := base["FileDescriptorName"]
		path := keys["ListenStream"]
		if name == "" || !strings.HasPrefix(path, spool+"/private/") {
			t.Fatalf("%s: FileDescriptorName %q, ListenStream %q: want a name and a socket in %s/private", unit, name, path, spool)
		}
		path = filepath.Join(queueDir, strings.TrimPrefix(path, spool))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatalf("%s: %v", unit, err)
		}
		t.Cleanup(func() { ln.Close() })
		u, err := user.Lookup(keys["SocketUser"])
		must(t, err)
		g, err := user.LookupGroup(keys["SocketGroup"])
		must(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(g.Gid)
		must(t, os.Chown(path, uid, gid))
		mode, err := strconv.ParseUint(keys["SocketMode"], 8, 32)
		must(t, err)
		must(t, os.Chmod(path, os.FileMode(mode)))
		socks[name] = daemontest.Socket{Name: name, Ln: ln}
	}
	for _, name := range []string{"policy", "socketmap", "milter"} {
		if _, ok := socks[name]; !ok {
			t.Fatalf("no drop-in makes the %q socket", name)
		}
	}
	return socks
}

// unitKeys is each key of a systemd unit file with its last non-empty
// value (an empty assignment resets a list such as ListenStream=).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for k, vs := range daemontest.Unit(t, path) {
		for _, v := range vs {
			if v != "" {
				keys[k] = v
			}
		}
	}
	return keys
}

// The unix-socket wiring works as shipped (issue #16): the sockets made
// as contrib/systemd's socket units say (in Postfix's private/, owned by
// postfix, 0660), passed to the daemons by name, and Postfix wired as
// contrib/postfix/main.cf's "unix sockets" alternative. A submission to a
// Google-hosted domain is routed to the relay through the socketmap and
// signed by the milter; the limits' policy service holds the next message
// of the same account.
func TestUnixSockets(t *testing.T) {
	needPostfix(t)
	t.Parallel()
	w := newWorld(t, worldOptions{Wiring: "socketmap", Unix: true, BeforeStart: func(w *world) {
		w.writeConfig(fmt.Sprintf(`
[[milter.dkim.keys]]
domain = "sender.e2e"
selector = "ed"
key_file = %q

[[limits]]
key = "sasl_username"
max = 1
window = "1h"
`, w.keygen("sender.e2e", "ed", "ed25519")))
	}})
	w.pf.cmd("postconf", "-e",
		"mxdetour_limits = check_policy_service { unix:private/mxdetour-policy, timeout=2s, try_limit=1, default_action=DUNNO, policy_context=limits }",
		"smtpd_recipient_restrictions = $mxdetour_limits, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"smtpd_end_of_data_restrictions = $mxdetour_limits")
	w.pf.cmd("postfix", "reload")
	w.pf.waitLog(`reload -- version`, 20*time.Second)

	for _, name := range []string{"policy", "socketmap", "milter"} {
		fi, err := os.Stat(filepath.Join(w.pf.dir, "queue", "private", "mxdetour-"+name))
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
			t.Errorf("private/mxdetour-%s: %v %v, want a socket of mode 0660", name, fi.Mode(), err)
		}
	}
	res := send(t, w.pf.addr(), submission{Login: "alice", From: "alice@sender.e2e", To: []string{"u1@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("first message not accepted: %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "u1@gmail.e2e at the relay", func() bool { return w.relay.has("u1@gmail.e2e") })
	msg := w.relay.Messages()[0].Data
	if sigs := dkimTags(msg); len(sigs) != 1 || sigs[0]["a"] != "ed25519-sha256" {
		t.Errorf("signatures over the unix milter socket: %v, want one ed25519-sha256", sigs)
	} else if out, ok := w.verifyDKIM(msg); !ok {
		t.Errorf("dkimpy does not verify the signature:\n%s", out)
	}
	res = send(t, w.pf.addr(), submission{Login: "alice", From: "alice@sender.e2e", To: []string{"u2@gmail.e2e"}})
	if !res.accepted() {
		t.Fatalf("second message not accepted (HOLD accepts it): %+v", res)
	}
	testutil.EventuallyWithin(t, 30*time.Second, "alice's second message in the hold queue", func() bool { return len(w.pf.heldQueue()) == 1 })
	for _, d := range []*daemonProc{w.policyd, w.milter} {
		if out := d.output(); strings.Contains(out, "not the configured one") || !strings.Contains(out, "systemd") {
			t.Errorf("%s does not serve the passed sockets as configured:\n%s", filepath.Base(d.bin), out)
		}
	}
	w.pf.waitLog(fmt.Sprintf(`to=<u1@gmail\.e2e>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d`, w.relay.port()), 5*time.Second)
}
