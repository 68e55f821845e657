package learn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mxdetour/mxdetour/internal/testutil"
)

// postfixUID is the uid the tests' Postfix runs as (Options.MailOwner).
const postfixUID = "4242"

// TestMain answers for postconf: the host's Postfix is none of the
// tests' business, and a postconf without a main.cf takes a second to
// fail (Postfix pauses after a fatal error), which a test that expects a
// line learned within a second would feel.
func TestMain(m *testing.M) {
	postconfValues = func(context.Context, string, ...string) ([]string, error) {
		return nil, errors.New("no Postfix in unit tests")
	}
	os.Exit(m.Run())
}

// journalLine is one line of `journalctl --output=json` for a record of
// uid: a syslog record as journald stores it. msg is a string, or []byte
// for a MESSAGE journald gives as an array of bytes.
func journalLine(cursor, uid, ident string, at time.Time, msg any) string {
	rec := map[string]any{"__CURSOR": cursor, "__REALTIME_TIMESTAMP": strconv.FormatInt(at.UnixMicro(), 10),
		"__MONOTONIC_TIMESTAMP": "1", "_BOOT_ID": "b", "_UID": uid, "SYSLOG_IDENTIFIER": ident, "SYSLOG_PID": "1612",
		"_PID": "1612"}
	switch m := msg.(type) {
	case []byte:
		n := make([]int, len(m))
		for i, c := range m {
			n[i] = int(c)
		}
		rec["MESSAGE"] = n
	default:
		rec["MESSAGE"] = m
	}
	b, err := json.Marshal(rec)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// refusal is the MESSAGE of smtp(8)'s line for a refusal of our address.
func refusal(id, dom string) string {
	return fmt.Sprintf("%s: to=<u@%s>, relay=mx.%s[192.0.2.99]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.%s[192.0.2.99] said: 554 5.7.1 Service unavailable; Client host [192.0.2.2] blocked using zen.spamhaus.org (in reply to RCPT TO command))",
		id, dom, dom, dom)
}

// fakeRun is what one run of the fake journalctl does: print lines, then
// exit with stderr (when exit) or wait to be killed, as journalctl
// --follow does.
type fakeRun struct {
	lines  []string
	exit   bool
	stderr string
}

// fakeJournalctl writes a journalctl that, on its Nth start, does
// runs[N-1] (after the last: prints nothing and waits), and returns the
// command and a function returning the arguments of each start so far.
func fakeJournalctl(t *testing.T, runs ...fakeRun) (string, func() [][]string) {
	t.Helper()
	dir := t.TempDir()
	for i, r := range runs {
		n := strconv.Itoa(i + 1)
		out := strings.Join(r.lines, "\n")
		if out != "" {
			out += "\n"
		}
		must(t, os.WriteFile(filepath.Join(dir, "out"+n), []byte(out), 0o644))
		if r.exit {
			must(t, os.WriteFile(filepath.Join(dir, "exit"+n), []byte(r.stderr+"\n"), 0o644))
		}
	}
	script := `#!/bin/sh
d='` + dir + `'
for a in "$@"; do printf '%s\t' "$a"; done >>"$d/args"
echo >>"$d/args"
n=$(wc -l <"$d/args" | tr -d ' ')
[ -f "$d/out$n" ] && cat "$d/out$n"
if [ -f "$d/exit$n" ]; then cat "$d/exit$n" >&2; exit 1; fi
exec sleep 3600
`
	cmd := filepath.Join(dir, "journalctl")
	must(t, os.WriteFile(cmd, []byte(script), 0o755))
	return cmd, func() [][]string {
		data, err := os.ReadFile(filepath.Join(dir, "args"))
		if err != nil {
			return nil
		}
		var starts [][]string
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			starts = append(starts, strings.Split(strings.TrimSuffix(l, "\t"), "\t"))
		}
		return starts
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// noPostfix makes postconf answer as a Postfix logging to syslog, for
// the tests' run; maillog is its maillog_file.
func noPostfix(t *testing.T, maillog string) {
	t.Helper()
	saved := postconfValues
	postconfValues = func(context.Context, string, ...string) ([]string, error) {
		return []string{"postfix", maillog}, nil
	}
	t.Cleanup(func() { postconfValues = saved })
}

// journalLearner runs a learner on the journal through journalctl cmd,
// with the state file path, until the test ends or stop is called.
func journalLearner(t *testing.T, cmd, state string, log *zap.Logger) (*Learner, *Store, func()) {
	t.Helper()
	noPostfix(t, "")
	s := newStore(t, state)
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{Source: SourceJournal, Journalctl: cmd, MailOwner: postfixUID, LogFile: "/nonexistent/mail.log",
		BlockTTL: time.Hour, SaveEvery: 50 * time.Millisecond}, c, s, log)
	l.restartMin, l.restartMax = 10*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return l, s, stop
}

func blocked(s *Store, dom string) bool {
	_, ok := s.Lookup(dom, nil, time.Now())
	return ok
}

// The problem this source solves: `logger -t postfix/smtp[4242] "...
// blocked using zen.spamhaus.org"` run by any local user reaches the
// journal too, with that user's _UID. Only the record of Postfix's own
// user teaches; the forged ones, and a delivery result inside a message of
// another Postfix program, teach nothing, and are reported once.
func TestJournalLearnsOnlyFromPostfix(t *testing.T) {
	at := time.Now().Add(-5 * time.Minute).Truncate(time.Microsecond)
	cmd, starts := fakeJournalctl(t, fakeRun{lines: []string{
		journalLine("c1", "1000", "postfix/smtp", at, refusal("4Xevil1QzNz9sW", "victim-corp.zz")),
		journalLine("c2", "65534", "postfix/relay/smtp", at, refusal("4Xevil2QzNz9sW", "victim-two.zz")),
		journalLine("c3", postfixUID, "postfix/smtpd", at, "NOQUEUE: reject: RCPT from x[198.51.100.7]: 554 5.7.1 <a@b>: Relay access denied; from=<\"postfix/smtp[1]: "+refusal("4Xevil3QzNz9sW", "victim-three.zz")+"\"@evil.zz> to=<a@b> proto=ESMTP helo=<x>"),
		journalLine("c4", postfixUID, "postfix/qmgr", at, "97B425F905: removed"),
		"not json",
		journalLine("c5", postfixUID, "postfix/smtp", at, []byte(refusal("97B425F906", "real.example"))),
	}})
	core, logs := observer.New(zapcore.InfoLevel)
	_, s, _ := journalLearner(t, cmd, filepath.Join(t.TempDir(), "state.json"), zap.New(core))
	testutil.Eventually(t, "real.example is learned", func() bool { return blocked(s, "real.example") })
	if b, _ := s.Lookup("real.example", nil, time.Now()); !b.Learned.Equal(at) {
		t.Errorf("learned at %v, want the record's __REALTIME_TIMESTAMP %v", b.Learned, at)
	}
	for _, d := range []string{"victim-corp.zz", "victim-two.zz", "victim-three.zz"} {
		if blocked(s, d) {
			t.Errorf("%s learned from a record that Postfix did not write", d)
		}
	}
	if n := logs.FilterMessageSnippet("not learned:").Len(); n != 1 {
		t.Errorf("%d warnings about untrusted records, want one for the source", n)
	}
	if logs.FilterMessageSnippet("not from Postfix's user").Len() != 1 {
		t.Errorf("the forged record is not reported: %v", logs.All())
	}
	got := starts()[0]
	since := time.Now().Add(-time.Hour).Unix()
	if !slices.Contains(got, "_UID="+postfixUID) || !slices.Contains(got, "--follow") || !slices.Contains(got, "--merge") || !slices.Contains(got, "--output=json") {
		t.Errorf("journalctl %q: want --follow --merge --output=json _UID=%s", got, postfixUID)
	}
	i := slices.IndexFunc(got, func(a string) bool { return strings.HasPrefix(a, "--since=@") })
	if i < 0 {
		t.Fatalf("journalctl %q: a first start reads from block_ttl ago (--since)", got)
	}
	if n, _ := strconv.ParseInt(strings.TrimPrefix(got[i], "--since=@"), 10, 64); n < since-60 || n > since+60 {
		t.Errorf("%s: want about @%d (an hour ago: block_ttl)", got[i], since)
	}
}

// The cursor of the last record read is saved beside the log file's
// offset, and the next start resumes after it.
func TestJournalCursorResumes(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	now := time.Now()
	cmd, _ := fakeJournalctl(t, fakeRun{lines: []string{
		journalLine("s=1;i=1", postfixUID, "postfix/smtp", now, refusal("AAAAA1", "one.example")),
		journalLine("s=1;i=2", postfixUID, "postfix/qmgr", now, "AAAAA1: removed"),
	}})
	_, s, stop := journalLearner(t, cmd, state, zaptest.NewLogger(t))
	s.SetOffset(Offset{Path: "/var/log/mail.log", Inode: 7, Pos: 99})
	testutil.Eventually(t, "the last record is read", func() bool { return s.JournalPos().Cursor == "s=1;i=2" })
	stop()
	var st stateFile
	data, err := os.ReadFile(state)
	must(t, err)
	must(t, json.Unmarshal(data, &st))
	if st.Journal == nil || st.Journal.Cursor != "s=1;i=2" || st.Offset.Pos != 99 {
		t.Fatalf("state file: journal %+v, offset %+v; want cursor s=1;i=2 beside offset 99", st.Journal, st.Offset)
	}

	cmd2, starts := fakeJournalctl(t, fakeRun{lines: []string{
		journalLine("s=1;i=3", postfixUID, "postfix/smtp", now, refusal("AAAAA2", "two.example")),
	}})
	_, s2, _ := journalLearner(t, cmd2, state, zaptest.NewLogger(t))
	testutil.Eventually(t, "two.example is learned", func() bool { return blocked(s2, "two.example") })
	if got := starts()[0]; !slices.Contains(got, "--after-cursor=s=1;i=2") || slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "--since") }) {
		t.Errorf("second start: journalctl %q, want --after-cursor=s=1;i=2 and no --since", got)
	}
	if !blocked(s2, "one.example") {
		t.Error("the block learned before the restart is lost")
	}
}

// journalctl that stops is started again, after the last record it gave,
// and the stop is logged as an error with what journalctl said.
func TestJournalctlRestarted(t *testing.T) {
	now := time.Now()
	cmd, starts := fakeJournalctl(t,
		fakeRun{lines: []string{journalLine("c1", postfixUID, "postfix/smtp", now, refusal("BBBBB1", "first.example"))},
			exit: true, stderr: "journalctl: something broke"},
		fakeRun{exit: true, stderr: "still broken"},
		fakeRun{lines: []string{journalLine("c2", postfixUID, "postfix-out/lmtp", now, refusal("BBBBB2", "second.example"))}})
	core, logs := observer.New(zapcore.InfoLevel)
	_, s, _ := journalLearner(t, cmd, filepath.Join(t.TempDir(), "state.json"), zap.New(core))
	testutil.Eventually(t, "second.example is learned after two restarts", func() bool { return blocked(s, "second.example") })
	if !blocked(s, "first.example") {
		t.Error("first.example not learned")
	}
	st := starts()
	if len(st) != 3 {
		t.Fatalf("%d starts of journalctl, want 3", len(st))
	}
	for i := 1; i < 3; i++ {
		if !slices.Contains(st[i], "--after-cursor=c1") {
			t.Errorf("start %d: journalctl %q, want --after-cursor=c1", i+1, st[i])
		}
	}
	stops := logs.FilterMessageSnippet("journalctl stopped").All()
	if len(stops) != 2 || stops[0].Level != zapcore.ErrorLevel || !strings.Contains(stops[0].ContextMap()["error"].(string), "something broke") {
		t.Errorf("journalctl's stops logged: %+v", stops)
	}
}

// A cursor journalctl cannot seek to does not stop learning: the next
// start reads from when its record was logged.
func TestJournalBadCursor(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	then := time.Now().Add(-10 * time.Minute)
	pre := newStore(t, state)
	pre.SetJournalPos(JournalPos{Cursor: "garbage", Time: then})
	must(t, pre.Save())
	cmd, starts := fakeJournalctl(t, fakeRun{exit: true, stderr: "Failed to seek to cursor: Invalid argument"},
		fakeRun{lines: []string{journalLine("c9", postfixUID, "postfix/smtp", time.Now(), refusal("CCCCC1", "after.example"))}})
	_, s, _ := journalLearner(t, cmd, state, zaptest.NewLogger(t))
	testutil.Eventually(t, "after.example is learned", func() bool { return blocked(s, "after.example") })
	st := starts()
	want := [][]string{{"--after-cursor=garbage"}, {"--since=@" + strconv.FormatInt(then.Unix(), 10)}}
	for i, w := range want {
		if !slices.Contains(st[i], w[0]) {
			t.Errorf("start %d: journalctl %q, want %s", i+1, st[i], w[0])
		}
	}
}

func TestJournalArgs(t *testing.T) {
	now := time.Now()
	since := now.Add(-time.Hour)
	at := func(t time.Time) string { return "--since=@" + strconv.FormatInt(t.Unix(), 10) }
	for _, tc := range []struct {
		name string
		pos  JournalPos
		want string
	}{
		{"first start", JournalPos{}, at(since)},
		{"resume", JournalPos{Cursor: "c", Time: now.Add(-time.Minute)}, "--after-cursor=c"},
		{"cursor without time", JournalPos{Cursor: "c"}, "--after-cursor=c"},
		{"down longer than block_ttl", JournalPos{Cursor: "c", Time: now.Add(-2 * time.Hour)}, at(since)},
		{"cursor dropped", JournalPos{Time: now.Add(-time.Minute)}, at(now.Add(-time.Minute))},
	} {
		args := journalArgs("102", tc.pos, since)
		if !slices.Contains(args, tc.want) || args[len(args)-1] != "_UID=102" {
			t.Errorf("%s: %q, want %s ... _UID=102", tc.name, args, tc.want)
		}
	}
}

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     journalRecord
		err      bool
	}{
		{"string", `{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1700000000000001","_UID":"102","SYSLOG_IDENTIFIER":"postfix/smtp","SYSLOG_PID":"7","MESSAGE":"A: x"}`,
			journalRecord{uid: "102", ident: "postfix/smtp", pid: "7", message: "A: x", cursor: "c", at: time.UnixMicro(1700000000000001)}, false},
		{"bytes, _PID", `{"__CURSOR":"c","_UID":"102","SYSLOG_IDENTIFIER":"postfix/smtp","_PID":"8","MESSAGE":[65,58,32,255]}`,
			journalRecord{uid: "102", ident: "postfix/smtp", pid: "8", message: "A: \xff", cursor: "c"}, false},
		{"too long (null), twice (array)", `{"__CURSOR":"c","_UID":["102","0"],"MESSAGE":null}`,
			journalRecord{cursor: "c"}, false},
		{"not bytes", `{"__CURSOR":"c","MESSAGE":[1,256]}`, journalRecord{cursor: "c"}, false},
		{"no cursor", `{"MESSAGE":"x"}`, journalRecord{}, true},
		{"not json", `{"MESSAGE":`, journalRecord{}, true},
	} {
		got, err := parseRecord([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(journalRecord{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// auto takes the journal only where Postfix logs to it and it can be
// read; otherwise the file, with a warning that its lines can be forged.
func TestChooseSource(t *testing.T) {
	cmd, _ := fakeJournalctl(t)
	usable := journalUsable
	t.Cleanup(func() { journalUsable = usable })
	for _, tc := range []struct {
		name, source, maillog, journalctl string
		usable                            error
		journal, err                      bool
	}{
		{"auto, journal usable", SourceAuto, "", cmd, nil, true, false},
		{"auto is the default", "", "", cmd, nil, true, false},
		{"auto, journal unreadable", SourceAuto, "", cmd, errors.New("no"), false, false},
		{"auto, maillog_file", SourceAuto, "/var/log/postfix.log", cmd, nil, false, false},
		{"auto, no journalctl", SourceAuto, "", "/nonexistent/journalctl", nil, false, false},
		{"file", SourceFile, "", cmd, nil, false, false},
		{"journal", SourceJournal, "", cmd, errors.New("not checked"), true, false},
		{"journal, no journalctl", SourceJournal, "", "/nonexistent/journalctl", nil, false, true},
	} {
		noPostfix(t, tc.maillog)
		journalUsable = func(context.Context, journalSource) error { return tc.usable }
		l := NewLearner(Options{Source: tc.source, Journalctl: tc.journalctl, MailOwner: postfixUID, LogFile: "/var/log/mail.log"},
			nil, nil, zaptest.NewLogger(t))
		js, journal, _, err := l.chooseSource(context.Background())
		if journal != tc.journal || (err != nil) != tc.err {
			t.Errorf("%s: journal %v, error %v; want journal %v, error %v", tc.name, journal, err, tc.journal, tc.err)
		}
		if journal && (js.uid != postfixUID || js.cmd != cmd) {
			t.Errorf("%s: %+v", tc.name, js)
		}
	}
}

// Learning from the file says, once at start, that its lines can be
// forged; a delivery result inside another program's line (a sender
// address anyone on port 25 chooses) is not learned, and reported once.
func TestFileSourceWarns(t *testing.T) {
	noPostfix(t, "")
	usable := journalUsable
	journalUsable = func(context.Context, journalSource) error { return errors.New("no journal here") }
	t.Cleanup(func() { journalUsable = usable })
	logFile := filepath.Join(t.TempDir(), "mail.log")
	now := time.Now().Format(time.RFC3339)
	forged := now + " mx1 postfix/smtpd[9]: NOQUEUE: reject: RCPT from x[198.51.100.7]: 554 5.7.1 <a@b>: Relay access denied; from=<\"postfix/smtp[1]: " +
		refusal("DDDDD1", "victim.example") + "\"@evil.example> to=<a@b> proto=ESMTP helo=<x>\n"
	appendLog(t, logFile, forged, forged, ipv4Refusal(time.Now(), "DDDDD2", "real.example"))
	core, logs := observer.New(zapcore.InfoLevel)
	s, _ := running(t, Options{LogFile: logFile, Source: SourceAuto, MailOwner: postfixUID}, zap.New(core))
	testutil.Eventually(t, "real.example is learned", func() bool { return blocked(s, "real.example") })
	if blocked(s, "victim.example") {
		t.Error("learned from a delivery result inside smtpd's line")
	}
	if n := logs.FilterMessageSnippet("can be forged").Len(); n != 1 {
		t.Errorf("%d warnings that the file can be forged, want 1", n)
	}
	if n := logs.FilterMessageSnippet("inside another program's message").Len(); n != 1 {
		t.Errorf("%d reports of the misplaced delivery result, want 1", n)
	}
}

// Postfix's maillog_file can be forged only through a set-group-id
// postlog; syslog's mail log by anyone.
func TestWarnForgeable(t *testing.T) {
	dir := t.TempDir()
	postlog := filepath.Join(dir, "postlog")
	must(t, os.WriteFile(postlog, nil, 0o755))
	for _, tc := range []struct {
		name, maillog string
		setgid        bool
		level         zapcore.Level
		says          string
	}{
		{"syslog's log", "", false, zapcore.WarnLevel, "any local user can write lines like Postfix's into syslog's mail log"},
		{"another file than maillog_file", "/var/log/postfix.log", false, zapcore.WarnLevel, "syslog's mail log"},
		{"maillog_file, postlog set-group-id", "/var/log/mail.log", true, zapcore.WarnLevel, "postlog is set-group-id postdrop"},
		{"maillog_file, postlog plain", "/var/log/mail.log", false, zapcore.InfoLevel, "local users cannot write it"},
	} {
		mode := os.FileMode(0o755)
		if tc.setgid {
			mode |= os.ModeSetgid
		}
		must(t, os.Chmod(postlog, mode))
		core, logs := observer.New(zapcore.InfoLevel)
		l := NewLearner(Options{LogFile: "/var/log/mail.log", Postsuper: filepath.Join(dir, "postsuper")}, nil, nil, zap.New(core))
		l.warnForgeable(tc.maillog)
		all := logs.All()
		if len(all) != 1 || all[0].Level != tc.level || !strings.Contains(all[0].Message, tc.says) {
			t.Errorf("%s: logged %+v; want one %s line saying %q", tc.name, all, tc.level, tc.says)
		}
	}
}

// With a journal on this machine, the real thing: a record logged as
// Postfix's user is learned, the same logged by another user is not.
// Needs root (to log as two users), systemd-journald, and a user postfix.
func TestRealJournal(t *testing.T) {
	js, err := (&Learner{}).findJournal("postfix")
	if err == nil {
		err = journalUsable(context.Background(), js)
	}
	if err != nil {
		t.Skipf("no usable system journal here (the real-server suite covers it): %v", err)
	}
	if os.Getuid() != 0 {
		t.Skip("logging as Postfix's user needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	s := newStore(t, filepath.Join(t.TempDir(), "state.json"))
	c, _ := NewClassifier(nil, nil)
	l := NewLearner(Options{Source: SourceJournal, MailOwner: "postfix", BlockTTL: time.Hour, SaveEvery: time.Second}, c, s, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tag := fmt.Sprintf("%d", time.Now().UnixNano())
	logAs := func(uid, dom string) {
		out, err := exec.Command(setpriv, "--reuid="+uid, "--regid="+uid, "--clear-groups", "logger", "-p", "mail.info",
			"--id=4242", "-t", "postfix/smtp", refusal("4X"+tag[len(tag)-8:], dom)).CombinedOutput()
		if err != nil {
			t.Fatalf("logger as %s: %v: %s", uid, err, out)
		}
	}
	logAs(nobody.Uid, "forged-"+tag+".example")
	logAs(js.uid, "real-"+tag+".example")
	testutil.Eventually(t, "the record of Postfix's user is learned", func() bool { return blocked(s, "real-"+tag+".example") })
	if blocked(s, "forged-"+tag+".example") {
		t.Error("learned from a record of user nobody")
	}
}

func FuzzJournalRecord(f *testing.F) {
	now := time.Now()
	f.Add([]byte(journalLine("c", postfixUID, "postfix/smtp", now, refusal("EEEEE1", "a.example"))))
	f.Add([]byte(journalLine("c", postfixUID, "postfix/smtp", now, []byte(refusal("EEEEE2", "b.example")))))
	f.Add([]byte(`{"__CURSOR":"c","_UID":["1","2"],"MESSAGE":[1,2,300]}`))
	c, _ := NewClassifier(nil, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRecord(data)
		if err != nil {
			return
		}
		s := &Store{log: zap.NewNop(), byDomain: map[string]*Block{}, byHost: map[string][]*Block{}, forgotten: map[string]Forgotten{}}
		l := NewLearner(Options{BlockTTL: time.Hour}, c, s, zap.NewNop())
		l.handleRecord(r, postfixUID, now)
		if r.uid != postfixUID && len(s.List(now)) > 0 {
			t.Fatalf("learned from a record of uid %q", r.uid)
		}
	})
}
