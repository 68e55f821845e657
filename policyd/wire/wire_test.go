package wire_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/pickup"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/route"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
	"github.com/mxdetour/mxdetour/policyd/wire"
	"github.com/mxdetour/mxdetour/policyd/wire/wiretest"
)

// TestMain runs the tests side by side beyond GOMAXPROCS: they wait on
// Postfix's commands, not on the CPU.
func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "8")
	}
	os.Exit(m.Run())
}

// serveSocketmap answers Postfix on ln as mxdetour-policyd does: its
// socketmap server, responder and decision, with a DNS server of its own
// on loopback (a reserved domain, as wire asks for, needs none).
func serveSocketmap(t *testing.T, ln net.Listener) {
	t.Helper()
	cfg := config.Default()
	cfg.DNS.Servers = []string{dnstest.New(t, dnstest.Zone{}).Addr()}
	cfg.Transports.Relay = "relay:[mx03.example.net]:587"
	log := zaptest.NewLogger(t)
	r, err := lookup.New(setup.Lookup(cfg.DNS), log)
	if err != nil {
		t.Fatal(err)
	}
	resp := respond.New(respond.Fixed(respond.Setup{Engine: route.New(setup.Route(cfg), r, nil, nil), Timeout: cfg.Policyd.DecisionTimeout.Duration}), log)
	s := socketmap.NewServer(resp, socketmap.Options{}, log)
	go s.Serve(ln) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func wireIt(t *testing.T, w wire.Want, o wire.Options) (string, error) {
	t.Helper()
	var out bytes.Buffer
	o.Out = &out
	err := wire.Wire(context.Background(), w, o)
	t.Logf("wire (dry run %v):\n%s", o.DryRun, out.String())
	return out.String(), err
}

func unwireIt(t *testing.T, o wire.Options) string {
	t.Helper()
	var out bytes.Buffer
	o.Out = &out
	err := wire.Unwire(context.Background(), o)
	t.Logf("unwire (dry run %v):\n%s", o.DryRun, out.String())
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func mustContain(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The whole cycle on Debian's stock files: a dry run that changes
// nothing, wire, a second wire with nothing to do, unwire back to the
// same bytes.
func TestWireStockDebian(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, "", "")
	ln := loopback(t)
	serveSocketmap(t, ln)
	w := wire.Want{
		Socketmap: ln.Addr().String(), Policy: "127.0.0.1:10040", Milter: "127.0.0.1:10042", Limits: true,
		Relay: "relay:[mx03.example.net]:587", IPv4: "smtp-ipv4:",
	}
	o := wire.Options{ConfigDir: in.Conf}
	record := filepath.Join(in.Conf, wire.RecordName)
	sasl := filepath.Join(in.Conf, "sasl_passwd")
	checks := filepath.Join(in.Conf, "mxdetour_header_checks")
	pristine := in.Snapshot()

	dry := o
	dry.DryRun = true
	out, err := wireIt(t, w, dry)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "dry run", out, "these changes would be made", "main.cf: transport_maps = socketmap:inet:"+ln.Addr().String()+":transport", "nothing was changed")
	in.SameBytes(pristine, true)
	if exists(record) || exists(sasl) || exists(checks) {
		t.Fatal("a dry run wrote the record, sasl_passwd or the header_checks table")
	}

	out, err = wireIt(t, w, o)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "wire", out, "postfix check: OK", "error:5.1.2", "Postfix is not running")

	sm := "socketmap:inet:" + ln.Addr().String() + ":transport"
	got := map[string]string{}
	for _, p := range []string{"transport_maps", "smtpd_milters", "non_smtpd_milters", "milter_default_action",
		"milter_protocol", "smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions", "mxdetour_limits",
		"smtp_delivery_status_filter", "header_checks", "internal_mail_filter_classes"} {
		got[p] = in.Param(p)
	}
	want := map[string]string{
		"transport_maps":                 sm,
		"smtpd_milters":                  "inet:127.0.0.1:10042",
		"non_smtpd_milters":              "inet:127.0.0.1:10042",
		"milter_default_action":          "accept",
		"milter_protocol":                "6",
		"smtpd_recipient_restrictions":   "$mxdetour_limits",
		"smtpd_end_of_data_restrictions": "$mxdetour_limits",
		"mxdetour_limits":                "check_policy_service { inet:127.0.0.1:10040, timeout=2s, try_limit=1, default_action=DUNNO, policy_context=limits }",
		"smtp_delivery_status_filter":    "$default_delivery_status_filter, socketmap:inet:" + ln.Addr().String() + ":status",
		"header_checks":                  "regexp:$config_directory/mxdetour_header_checks",
		"internal_mail_filter_classes":   "bounce",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("main.cf (-want +got):\n%s", d)
	}
	checkHeaderChecks(t, checks)
	opts, fields := in.Options(), in.Fields()
	smtpd := 0
	for k, v := range fields {
		if svc, ok := strings.CutSuffix(k, "/command"); ok && strings.Fields(v)[0] == "smtpd" {
			smtpd++
			if opts[svc+"/rewrite_service_name"] != "rewrite-smtpd" {
				t.Errorf("smtpd service %s lacks -o rewrite_service_name=rewrite-smtpd", svc)
			}
		}
	}
	if smtpd == 0 {
		t.Error("no smtpd service in master.cf")
	}
	for k, v := range map[string]string{
		"relay/unix/syslog_name":                    "postfix/$service_name",
		"relay/unix/smtp_tls_security_level":        "encrypt",
		"relay/unix/smtp_sasl_auth_enable":          "yes",
		"relay/unix/smtp_sasl_security_options":     "noanonymous",
		"relay/unix/smtp_sasl_tls_security_options": "noanonymous",
		"relay/unix/smtp_sasl_password_maps":        "hash:" + sasl,
		"smtp-ipv4/unix/inet_protocols":             "ipv4",
		"rewrite-smtpd/unix/transport_maps":         "",
		"relay/unix/smtp_delivery_status_filter":    "",
	} {
		if g, ok := opts[k]; !ok || g != v {
			t.Errorf("master.cf: -o %s = %q (set: %v), want %q", k, g, ok, v)
		}
	}
	if n := in.Entries("relay/unix"); n != 1 {
		t.Errorf("master.cf has %d relay/unix entries, want 1", n)
	}
	if c := fields["rewrite-smtpd/unix/chroot"]; c != fields["rewrite/unix/chroot"] || fields["rewrite-smtpd/unix/command"] != "trivial-rewrite -o transport_maps=" {
		t.Errorf("rewrite-smtpd is not a copy of rewrite: chroot %q, command %q", c, fields["rewrite-smtpd/unix/command"])
	}
	if fi, err := os.Stat(sasl); err != nil || fi.Mode().Perm() != 0o600 || !exists(sasl+".db") {
		t.Errorf("sasl_passwd: %v, %v; .db exists: %v", fi, err, exists(sasl+".db"))
	}
	if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record: %v, %v", fi, err)
	}

	wired := in.Snapshot()
	rec, _ := os.ReadFile(record)
	out, err = wireIt(t, w, o)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "second wire", out, "nothing to change", "postfix check: OK")
	in.SameBytes(wired, true)
	if again, _ := os.ReadFile(record); !bytes.Equal(rec, again) {
		t.Error("the second wire rewrote the record")
	}

	out = unwireIt(t, dry)
	mustContain(t, "unwire -dry-run", out, "main.cf: back to its bytes from before wire", "nothing was changed")
	in.SameBytes(wired, true)

	out = unwireIt(t, o)
	mustContain(t, "unwire", out, "master.cf: back to its bytes from before wire", "removed "+sasl)
	in.SameBytes(pristine, false)
	for _, f := range []string{record, sasl, sasl + ".db", checks} {
		if exists(f) {
			t.Errorf("%s is still there after unwire", f)
		}
	}
}

// checkHeaderChecks: the table wire created holds pickup's line (the
// README's, which a test of milter/pickup keeps the same), and Postfix's
// regexp table, as cleanup reads it, turns pickup's Received: header into
// the header mxdetour-milter reads.
func checkHeaderChecks(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n"+pickup.HeaderChecks+"\n") {
		t.Errorf("%s lacks the line\n%s\n%s", path, pickup.HeaderChecks, b)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v %v, want mode 0644", path, fi, err)
	}
	postmap, err := wiretest.Command("postmap")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(postmap, "-c", filepath.Dir(path), "-q", "Received: by mta.example.net (Postfix, from userid 33)\n\tid 4dQ7bK1Zc3z9rxN; Tue,  8 Dec 2026 00:12:43 +0000 (UTC)", "regexp:"+path)
	out, err := cmd.CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "PREPEND "+pickup.Header+": uid=33 id=4dQ7bK1Zc3z9rxN"; err != nil || got != want {
		t.Errorf("postmap -q regexp:%s: %q (%v), want %q", path, got, err, want)
	}
}

// An administrator's instance: a static transport table named but never
// built, a relay service, a submission service with its own restrictions,
// a milter of theirs, a unix socket in the spool, a running Postfix. Then
// they edit main.cf after wire, and unwire keeps their edit.
func TestWireAdministratorsInstance(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, `
transport_maps = hash:$config_directory/transport
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_milters = inet:127.0.0.1:9999
milter_default_action = tempfail
milter_command_timeout = 20s
header_checks = regexp:$config_directory/their_checks
`, `submission inet n - y - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
`)
	sock := filepath.Join(in.MkPrivate(), "mxdetour-socketmap")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveSocketmap(t, ln)
	// A Postfix that says it runs: wire must reload it.
	realPostfix, err := wiretest.Command("postfix")
	if err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(in.Dir, "postfix-calls")
	fake := filepath.Join(in.Dir, "postfix")
	must(t, os.WriteFile(fake, []byte(`#!/bin/sh
echo "$@" >> `+calls+`
case "$3" in status|reload) exit 0;; esac
exec `+realPostfix+` "$@"
`), 0o755))
	w := wire.Want{Socketmap: "unix:" + sock, Policy: "127.0.0.1:10040", Milter: "127.0.0.1:10042", Limits: true,
		Relay: "relay:[mx03.example.net]:587"}
	o := wire.Options{ConfigDir: in.Conf, Postfix: fake}
	transport := filepath.Join(in.Conf, "transport")
	theirChecks, ourChecks := filepath.Join(in.Conf, "their_checks"), filepath.Join(in.Conf, "mxdetour_header_checks")
	must(t, os.WriteFile(theirChecks, []byte("/^X-Mailer: spammer/ DISCARD\n"), 0o644))
	pristine := in.Snapshot()

	out, err := wireIt(t, w, o)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "wire", out, `milter_default_action was "tempfail"`, "postfix reload: done", "error:5.1.2")
	if b, _ := os.ReadFile(calls); !strings.Contains(string(b), "reload") {
		t.Errorf("Postfix was not reloaded; postfix was run with:\n%s", b)
	}
	got := map[string]string{}
	for _, p := range []string{"transport_maps", "smtpd_milters", "milter_default_action", "milter_command_timeout", "smtpd_recipient_restrictions", "header_checks"} {
		got[p] = in.Param(p)
	}
	opts := in.Options()
	for _, k := range []string{"rewrite-smtpd/unix/transport_maps", "submission/inet/smtpd_recipient_restrictions",
		"submission/inet/rewrite_service_name", "relay/unix/syslog_name", "relay/unix/smtp_tls_security_level"} {
		got[k] = opts[k]
	}
	want := map[string]string{
		"transport_maps":                               "hash:$config_directory/transport, socketmap:unix:private/mxdetour-socketmap:transport",
		"smtpd_milters":                                "inet:127.0.0.1:9999, inet:127.0.0.1:10042",
		"milter_default_action":                        "accept",
		"milter_command_timeout":                       "20s", // theirs
		"smtpd_recipient_restrictions":                 "$mxdetour_limits, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"header_checks":                                "regexp:$config_directory/their_checks, regexp:$config_directory/mxdetour_header_checks", // theirs first
		"rewrite-smtpd/unix/transport_maps":            "hash:$config_directory/transport",
		"submission/inet/smtpd_recipient_restrictions": "$mxdetour_limits,permit_sasl_authenticated,reject",
		"submission/inet/rewrite_service_name":         "rewrite-smtpd",
		"relay/unix/syslog_name":                       "postfix/$service_name",
		"relay/unix/smtp_tls_security_level":           "encrypt",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after wire (-want +got):\n%s", d)
	}
	if n := in.Entries("relay/unix"); n != 1 {
		t.Errorf("master.cf has %d relay/unix entries, want 1 (the stock one, modified)", n)
	}
	if !exists(transport) || !exists(transport+".db") {
		t.Error("the transport table transport_maps names was not created")
	}

	// The administrator adds a milter of theirs and a setting.
	masterWired := in.Snapshot()["master.cf"]
	in.Postconf("-e", "smtpd_milters = inet:127.0.0.1:9999, inet:127.0.0.1:10042, inet:127.0.0.1:7777", "myorigin = example.org")

	out = unwireIt(t, o)
	mustContain(t, "unwire", out, "main.cf was edited after wire", "master.cf: back to its bytes", "kept, though wire created it", "postfix reload: done")
	if b, _ := os.ReadFile(calls); strings.Count(string(b), "reload") != 2 {
		t.Errorf("want a reload after wire and one after unwire; postfix was run with:\n%s", b)
	}
	got = map[string]string{}
	for _, p := range []string{"transport_maps", "smtpd_milters", "milter_default_action", "smtpd_recipient_restrictions", "myorigin", "header_checks"} {
		got[p] = in.Param(p)
	}
	want = map[string]string{
		"header_checks":                "regexp:$config_directory/their_checks",
		"transport_maps":               "hash:$config_directory/transport",
		"smtpd_milters":                "inet:127.0.0.1:9999, inet:127.0.0.1:7777",
		"milter_default_action":        "tempfail",
		"smtpd_recipient_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"myorigin":                     "example.org",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after unwire (-want +got):\n%s", d)
	}
	if _, set := pairs(in.Postconf("-n"))["mxdetour_limits"]; set {
		t.Error("mxdetour_limits is still set")
	}
	if b := in.Snapshot()["master.cf"].Bytes; !bytes.Equal(b, pristine["master.cf"].Bytes) {
		t.Errorf("master.cf is not back to its bytes; wired it was\n%s\nnow\n%s", masterWired.Bytes, b)
	}
	// Their transport_maps still names the table: without it Postfix
	// would defer all mail, so it stays.
	if !exists(transport) || !exists(transport+".db") {
		t.Error("unwire removed the transport table main.cf still names")
	}
	if !exists(theirChecks) || exists(ourChecks) {
		t.Errorf("after unwire: their header_checks table exists: %v (want true), ours: %v (want false)", exists(theirChecks), exists(ourChecks))
	}
}

// The header_checks line for the sendmail command's mail: wired only with
// limits and the milter (which deletes the header it adds); a table of
// the administrator's holding it already (README's by-hand way) is used
// instead; a file of our name without the line is refused; a table wire
// did not create stays at unwire; what would skip header_checks is said.
func TestWireHeaderChecks(t *testing.T) {
	t.Parallel()
	limits := wire.Want{Policy: "127.0.0.1:10040", Milter: "127.0.0.1:10042", Limits: true}

	t.Run("no milter, no limits", func(t *testing.T) {
		t.Parallel()
		in := wiretest.New(t, "", "")
		for _, w := range []wire.Want{{Policy: "127.0.0.1:10040", Limits: true}, {Milter: "127.0.0.1:10042"}} {
			if _, err := wireIt(t, w, wire.Options{ConfigDir: in.Conf}); err != nil {
				t.Fatal(err)
			}
			if got := in.Param("header_checks"); got != "" {
				t.Errorf("%+v: header_checks = %q, want none", w, got)
			}
		}
		if exists(filepath.Join(in.Conf, "mxdetour_header_checks")) {
			t.Error("the table was created")
		}
	})

	t.Run("theirs has the line", func(t *testing.T) {
		t.Parallel()
		in := wiretest.New(t, "header_checks = pcre:$config_directory/mxdetour-local-user.regexp\n"+
			"receive_override_options = no_address_mappings, no_header_body_checks\n",
			"cleanup-x unix n - y - 0 cleanup\n  -o header_checks=\n")
		must(t, os.WriteFile(filepath.Join(in.Conf, "mxdetour-local-user.regexp"), []byte(pickup.HeaderChecks+"\n"), 0o644))
		out, err := wireIt(t, limits, wire.Options{ConfigDir: in.Conf})
		if err != nil {
			t.Fatal(err)
		}
		mustContain(t, "wire", out, "header_checks already names pcre:"+filepath.Join(in.Conf, "mxdetour-local-user.regexp"),
			"receive_override_options has no_header_body_checks", "master.cf's cleanup-x/unix has -o header_checks=\"\" of its own")
		if got := in.Param("header_checks"); got != "pcre:$config_directory/mxdetour-local-user.regexp" {
			t.Errorf("header_checks = %q, want theirs alone", got)
		}
		if exists(filepath.Join(in.Conf, "mxdetour_header_checks")) {
			t.Error("the table was created")
		}
	})

	t.Run("ours without the line", func(t *testing.T) {
		t.Parallel()
		in := wiretest.New(t, "", "")
		must(t, os.WriteFile(filepath.Join(in.Conf, "mxdetour_header_checks"), []byte("/^Subject: x/ IGNORE\n"), 0o644))
		pristine := in.Snapshot()
		_, err := wireIt(t, limits, wire.Options{ConfigDir: in.Conf})
		var ce wire.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "lacks mxdetour's header_checks line") {
			t.Errorf("wire = %v, want a ConfigError about the table", err)
		}
		in.SameBytes(pristine, true)
	})

	t.Run("the table there, not named", func(t *testing.T) {
		t.Parallel()
		in := wiretest.New(t, "", "")
		checks := filepath.Join(in.Conf, "mxdetour_header_checks")
		must(t, os.WriteFile(checks, []byte(pickup.HeaderChecks+"\n"), 0o644))
		o := wire.Options{ConfigDir: in.Conf}
		pristine := in.Snapshot()
		out, err := wireIt(t, limits, o)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "create "+checks) {
			t.Error("the table was created again")
		}
		if got := in.Param("header_checks"); got != "regexp:$config_directory/mxdetour_header_checks" {
			t.Errorf("header_checks = %q", got)
		}
		wired := in.Snapshot()
		if out, err := wireIt(t, limits, o); err != nil || !strings.Contains(out, "nothing to change") {
			t.Errorf("second wire: %v, want nothing to change", err)
		}
		in.SameBytes(wired, true)
		unwireIt(t, o)
		in.SameBytes(pristine, false)
		if !exists(checks) {
			t.Error("unwire removed a table wire did not create")
		}
	})
}

// Without mxdetour-policyd answering, wire leaves the wiring in place but
// fails, and says what to do.
func TestWireFailsWithoutPolicyd(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, "", "")
	ln := loopback(t)
	addr := ln.Addr().String()
	ln.Close()
	_, err := wireIt(t, wire.Want{Socketmap: addr, Relay: "relay:[mx03.example.net]:587"}, wire.Options{ConfigDir: in.Conf})
	var ce wire.ConfigError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("wire = %v, want a failure", err)
	}
	mustContain(t, "the error", err.Error(), "mxdetour-policyd is not answering on inet:"+addr, "systemctl enable --now")
}

// postfix check reports only to a terminal; wire gives it one, and fails
// on what it says (here: a queue directory Postfix does not own).
func TestWireFailsOnPostfixCheckWarnings(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, "", "")
	must(t, os.Mkdir(filepath.Join(in.Queue, "private"), 0o700)) // root's
	_, err := wireIt(t, wire.Want{Milter: "127.0.0.1:10042"}, wire.Options{ConfigDir: in.Conf})
	if err == nil || !strings.Contains(err.Error(), "not owned by postfix: "+filepath.Join(in.Queue, "private")) {
		t.Errorf("wire = %v, want postfix check's warning", err)
	}
}

// What wire cannot do well it refuses, before changing anything.
func TestWireRefuses(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, "", "")
	pristine := in.Snapshot()
	for _, c := range []struct {
		name string
		w    wire.Want
		want string
	}{
		{"relay through the default smtp", wire.Want{Relay: "smtp:[mx03.example.net]:587"}, "Postfix's default delivery service"},
		{"socket out of the chroot", wire.Want{Socketmap: "unix:/run/mxdetour/socketmap.sock"}, "outside Postfix's queue directory"},
		{"limits without policy", wire.Want{Limits: true}, "policy_listen"},
		{"one service twice", wire.Want{Relay: "relay:[a.example]:587", IPv4: "relay:"}, "the same Postfix service"},
	} {
		_, err := wireIt(t, c.w, wire.Options{ConfigDir: in.Conf})
		var ce wire.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: wire = %v, want a ConfigError saying %q", c.name, err, c.want)
		}
	}
	in.SameBytes(pristine, true)
	if exists(filepath.Join(in.Conf, wire.RecordName)) {
		t.Error("a refused wire left a record")
	}
}

// Debian's stock master.cf with the contrib snippet appended, as finding
// 4b did it, has the relay twice: wire says so and changes nothing.
func TestWireDuplicateService(t *testing.T) {
	t.Parallel()
	in := wiretest.New(t, "", "relay unix - - y - - smtp\n  -o smtp_tls_security_level=encrypt\n")
	_, err := wireIt(t, wire.Want{Relay: "relay:[mx03.example.net]:587"}, wire.Options{ConfigDir: in.Conf})
	var ce wire.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "two entries for service relay/unix") {
		t.Errorf("wire = %v, want a ConfigError naming the duplicate", err)
	}
}

func pairs(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok {
			m[k] = v
		}
	}
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
