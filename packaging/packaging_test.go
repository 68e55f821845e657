// Package packaging holds no code: its tests check what the packages ship
// against the rest of the tree (ci-check.sh checks the built packages).
package packaging

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon/daemontest"
)

// spool is where the packaged socket units put the sockets.
const spool = "unix:/var/spool/postfix/private/"

// milterPolicyd is the policy socket's second address, abstract, for the
// milter (user mxdetour, kept out of Postfix's private/): mxdetour-policyd.socket
// listens there too, and the packaged milter.policyd_listen names it.
const milterPolicyd = "unix:@mxdetour-policy"

// sockets: each socket unit, the TOML key that must name the same
// address, its FileDescriptorName= and its embedded (make run) default.
var sockets = []struct {
	unit, key, name, path string
	field                 func(*config.Config) *string
}{
	{"mxdetour-policyd.socket", "policyd.policy_listen", "policy", "mxdetour-policy",
		func(c *config.Config) *string { return &c.Policyd.PolicyListen }},
	{"mxdetour-policyd-socketmap.socket", "policyd.socketmap_listen", "socketmap", "mxdetour-socketmap",
		func(c *config.Config) *string { return &c.Policyd.SocketmapListen }},
	{"mxdetour-milter.socket", "milter.listen", "milter", "mxdetour-milter",
		func(c *config.Config) *string { return &c.Milter.Listen }},
}

// packagedTOML runs packaged-toml.sh as the Makefile's packages target does.
func packagedTOML(t *testing.T) (contrib, packaged []byte) {
	t.Helper()
	contrib, err := os.ReadFile("../contrib/mxdetour.toml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "packaged-toml.sh", "../contrib/mxdetour.toml")
	cmd.Stderr = os.Stderr
	packaged, err = cmd.Output()
	if err != nil {
		t.Fatalf("packaged-toml.sh: %v", err)
	}
	return contrib, packaged
}

// TestPackagedTOML: /etc/mxdetour/mxdetour.toml is contrib/mxdetour.toml
// (config.Default(), loopback TCP for make run) but for exactly four
// lines: the three listen lines, which name the socket units' unix
// sockets, and milter.policyd_listen, the policy socket's abstract
// address; it parses and validates, and means the defaults but for those
// four keys.
func TestPackagedTOML(t *testing.T) {
	contrib, packaged := packagedTOML(t)
	a, b := strings.Split(string(contrib), "\n"), strings.Split(string(packaged), "\n")
	if len(a) != len(b) {
		t.Fatalf("the packaged TOML has %d lines, contrib/mxdetour.toml %d", len(b), len(a))
	}
	var changed []string
	for i := range a {
		if a[i] != b[i] {
			key, _, _ := strings.Cut(b[i], "=")
			changed = append(changed, strings.TrimSpace(key))
		}
	}
	if want := []string{"policy_listen", "socketmap_listen", "listen", "policyd_listen"}; !slices.Equal(changed, want) {
		t.Errorf("lines changed for keys %q, want %q", changed, want)
	}

	got, err := config.Parse("mxdetour.toml", packaged)
	if err != nil {
		t.Fatalf("the packaged TOML: %v", err)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the packaged TOML does not validate: %v", err)
	}
	want, err := config.Parse("contrib.toml", contrib)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sockets {
		*s.field(want) = spool + s.path
	}
	want.Milter.PolicydListen = milterPolicyd
	if got.MilterPolicyd() != milterPolicyd {
		t.Errorf("the packaged milter asks policyd at %q, want %q", got.MilterPolicyd(), milterPolicyd)
	}
	addrCmp := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	prefixCmp := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, got, addrCmp, prefixCmp); diff != "" {
		t.Errorf("the packaged TOML means more than the unix listen addresses (-want +got):\n%s", diff)
	}
}

// TestSocketUnits: each socket unit listens where the packaged TOML says,
// in Postfix's spool, owned by postfix and 0660, under its name (the
// policy socket also at the abstract address of milter.policyd_listen,
// first: readers of one address take the last); its TCP drop-in replaces
// that by the embedded default's loopback address.
func TestSocketUnits(t *testing.T) {
	_, packaged := packagedTOML(t)
	cfg, err := config.Parse("mxdetour.toml", packaged)
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default()
	for _, s := range sockets {
		u := daemontest.Unit(t, filepath.Join("..", "contrib", "systemd", s.unit))
		listen := []string{strings.TrimPrefix(*s.field(cfg), "unix:")}
		if s.name == "policy" {
			listen = append([]string{strings.TrimPrefix(cfg.Milter.PolicydListen, "unix:")}, listen...)
		}
		if got := u["ListenStream"]; !slices.Equal(got, listen) {
			t.Errorf("%s: ListenStream=%q, want %q (%s)", s.unit, got, listen, s.key)
		}
		for key, want := range map[string]string{
			"FileDescriptorName": s.name,
			"SocketUser":         "postfix", "SocketGroup": "postfix", "SocketMode": "0660",
			"AssertPathIsDirectory": "/var/spool/postfix/private",
		} {
			if got := u[key]; !slices.Equal(got, []string{want}) {
				t.Errorf("%s: %s=%q, want %q (%s)", s.unit, key, got, want, s.key)
			}
		}
		d := daemontest.Unit(t, filepath.Join("..", "contrib", "systemd", "tcp", s.unit+".d", "tcp.conf"))
		if got, want := d["ListenStream"], []string{"", *s.field(def)}; !slices.Equal(got, want) {
			t.Errorf("tcp/%s.d: ListenStream=%q, want %q", s.unit, got, want)
		}
		if got := d["AssertPathIsDirectory"]; !slices.Equal(got, []string{""}) {
			t.Errorf("tcp/%s.d: AssertPathIsDirectory=%q, want it reset", s.unit, got)
		}
	}
}

// keepTCP returns the keep_tcp function of a postinst.
func keepTCP(t *testing.T, script string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("scripts", script))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, "# --- keep-tcp:"), strings.Index(s, "# --- keep-tcp end")
	if i < 0 || j < i {
		t.Fatalf("%s: no keep-tcp block", script)
	}
	return s[i:j]
}

// TestKeepTCP: on an upgrade, the postinst keeps the old loopback address
// of each socket Postfix's wiring still names (as postconf -hx prints it),
// adding it to the unit's unix socket, says what to do, and leaves the
// rest alone. Both packages' postinsts have the same function.
func TestKeepTCP(t *testing.T) {
	fn := keepTCP(t, "postinstall-deb.sh")
	if rpm := keepTCP(t, "postinstall-rpm.sh"); rpm != fn {
		t.Fatal("postinstall-deb.sh and postinstall-rpm.sh differ in keep_tcp")
	}
	for _, tc := range []struct {
		name, wired string // "" for no postconf; "FAIL" for one that fails
		kept        []string
	}{
		{"socketmap and milter on TCP", "socketmap:inet:127.0.0.1:10041:transport\npermit_mynetworks\n\ninet:127.0.0.1:10042\ninet:127.0.0.1:10042\n",
			[]string{"mxdetour-policyd-socketmap.socket", "mxdetour-milter.socket"}},
		{"the limits' policy service, bracketed", "socketmap:unix:private/mxdetour-socketmap:transport\ncheck_policy_service { inet:[127.0.0.1]:10040, timeout=2s }, permit_mynetworks\n",
			[]string{"mxdetour-policyd.socket"}},
		{"wired to the unix sockets", "socketmap:unix:private/mxdetour-socketmap:transport\n\n\nunix:private/mxdetour-milter\n", nil},
		{"no postconf", "", nil},
		{"postconf fails", "FAIL", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			etc := filepath.Join(dir, "etc")
			bin := filepath.Join(dir, "bin")
			os.Mkdir(bin, 0o755)
			for _, tool := range []string{"cat", "mkdir"} {
				p, err := exec.LookPath(tool)
				if err != nil {
					t.Skip(tool, err)
				}
				os.Symlink(p, filepath.Join(bin, tool))
			}
			if tc.wired != "" {
				os.WriteFile(filepath.Join(dir, "wired"), []byte(tc.wired), 0o644)
				body := "#!/bin/sh\n" +
					"[ \"$*\" = '-hx transport_maps smtpd_recipient_restrictions smtpd_end_of_data_restrictions smtpd_milters non_smtpd_milters smtp_delivery_status_filter' ] || { echo \"postconf $*\" >&2; exit 9; }\n"
				if tc.wired == "FAIL" {
					body += "echo 'postconf: fatal: open /etc/postfix/main.cf: No such file or directory' >&2; exit 1\n"
				} else {
					body += "cat " + filepath.Join(dir, "wired") + "\n"
				}
				os.WriteFile(filepath.Join(bin, "postconf"), []byte(body), 0o755)
			}
			script := "set -e\n" + strings.ReplaceAll(fn, "/etc/systemd/system", etc) + "keep_tcp\necho done\n"
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Env = []string{"PATH=" + bin}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasSuffix(string(out), "done\n") {
				t.Fatalf("keep_tcp: %v\n%s", err, out)
			}
			var kept []string
			for _, s := range sockets {
				data, err := os.ReadFile(filepath.Join(etc, s.unit+".d", "keep-tcp.conf"))
				if err != nil {
					continue
				}
				kept = append(kept, s.unit)
				u := daemontest.Unit(t, filepath.Join(etc, s.unit+".d", "keep-tcp.conf"))
				// Added beside the unix socket, not replacing it (no empty
				// ListenStream=), on the address the units had.
				if got, want := u["ListenStream"], []string{*s.field(config.Default())}; !slices.Equal(got, want) {
					t.Errorf("%s keep-tcp.conf: ListenStream=%q, want %q\n%s", s.unit, got, want, data)
				}
				if len(u) != 1 {
					t.Errorf("%s keep-tcp.conf sets more than ListenStream=: %v", s.unit, u)
				}
			}
			if !slices.Equal(kept, tc.kept) {
				t.Errorf("kept TCP for %q, want %q\n%s", kept, tc.kept, out)
			}
			if notice := strings.Contains(string(out), "mxdetour-policyd wire"); notice != (len(tc.kept) > 0) {
				t.Errorf("notice printed: %v, want %v\n%s", notice, len(tc.kept) > 0, out)
			}
			for _, u := range tc.kept {
				if !strings.Contains(string(out), u) {
					t.Errorf("the notice does not name %s:\n%s", u, out)
				}
			}
		})
	}
}
