package learn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/postfix"
)

// Learning from the journal. Any local user can write a line into
// syslog's mail log that looks like Postfix's (`logger -p mail.info -t
// postfix/smtp[1] "ID: to=<...>, status=bounced (... blocked using
// zen.spamhaus.org)"`), and would make the learner route a domain away, or
// requeue a queue id. systemd-journald records with every message who
// sent it, in fields no client can set (systemd.journal-fields(7),
// "Trusted Journal Fields"): _UID comes from the kernel's credentials of
// the socket's peer. So the learner reads, through `journalctl --follow
// --output=json _UID=N`, the records of Postfix's mail_owner (the user
// its smtp(8) and lmtp(8) clients run as), keeps those whose
// SYSLOG_IDENTIFIER is a delivery agent's (postfix/smtp, postfix/relay/smtp,
// postfix-out/lmtp ...; only Postfix, running as that user, sets it),
// checks _UID again itself, and learns from the line `IDENT[PID]: MESSAGE`
// rebuilt from them, dated by __REALTIME_TIMESTAMP.
//
// journalctl is a child process (no cgo: sd-journal is a C library). Its
// cursor of the last record read is kept in the state file beside the log
// file's offset, so that a restart resumes after it; the first start reads
// back block_ttl. When journalctl stops it is started again, after a wait
// that doubles from a second to a minute, with an error in the log each
// time.
//
// Learning from a file remains for hosts without journald, and for
// Postfix's own maillog_file: postlogd writes it, and a local user can
// add lines to it only through postlog(1) when that is set-group-id
// postdrop, as Postfix's own installation (`postfix set-permissions`) makes
// it; Debian's package leaves it 0755, and then postlog cannot reach
// postlogd nor open the file.

// Sources of learning (Options.Source, [learn] source).
const (
	SourceAuto    = "auto"
	SourceJournal = "journal"
	SourceFile    = "file"
)

// agentRE matches the SYSLOG_IDENTIFIER of Postfix's delivery agents, as
// lineRE's tag does.
var agentRE = regexp.MustCompile(`^postfix[^ /\[]*/(?:[^ \[:]+/)*(?:smtp|lmtp)$`)

// Where systemd-journald listens and keeps its files (systemd-journald(8)).
var (
	journaldSocket = "/run/systemd/journal/socket"
	journalDirs    = []string{"/var/log/journal", "/run/log/journal"}
)

// journalSource is what reading Postfix's records needs.
type journalSource struct {
	cmd   string // journalctl
	uid   string // Postfix's mail_owner, decimal
	owner string // its name, for the log
}

// chooseSource decides where Run learns from; journal is false for the
// log file. maillog is Postfix's maillog_file, "" when it logs to syslog
// or postconf cannot tell.
func (l *Learner) chooseSource(ctx context.Context) (js journalSource, journal bool, maillog string, err error) {
	owner, maillog, perr := l.postfixLogging(ctx)
	if l.o.Source == SourceFile {
		l.sourceIs(l.o.LogFile)
		return journalSource{}, false, maillog, nil
	}
	js, err = l.findJournal(owner)
	if l.o.Source == SourceJournal {
		if err != nil {
			return journalSource{}, false, maillog, fmt.Errorf("learn.source = journal: %w", err)
		}
		if maillog != "" {
			l.log.Warn("Postfix logs to its maillog_file, not to the journal: nothing is learned until maillog_file is empty (or learn.source is not journal)",
				zap.String("maillog_file", maillog))
		}
		l.sourceIs(SourceJournal)
		return js, true, maillog, nil
	}
	why := err
	switch {
	case why != nil:
	case perr != nil:
		why = fmt.Errorf("cannot tell where Postfix logs: %w", perr)
	case maillog != "":
		why = fmt.Errorf("maillog_file = %s: Postfix logs there, not to the journal", maillog)
	default:
		why = journalUsable(ctx, js)
	}
	if why != nil {
		l.log.Info("learning from the log file: the journal cannot be used (learn.source = auto)",
			zap.String("file", l.o.LogFile), zap.String("why", why.Error()))
		l.sourceIs(l.o.LogFile)
		return journalSource{}, false, maillog, nil
	}
	l.sourceIs(SourceJournal)
	return js, true, maillog, nil
}

// sourceIs records what the learner reads, for the log.
func (l *Learner) sourceIs(name string) {
	l.mu.Lock()
	l.source = name
	l.mu.Unlock()
}

// sourceName is what the learner reads: "journal" or the log file.
func (l *Learner) sourceName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.source == "" {
		return l.o.LogFile
	}
	return l.source
}

// warnForgeable says, when learning from a file, who can forge its
// lines: any local user, through syslog; for Postfix's own maillog_file
// (maillog), only through postlog(1) when it is set-group-id postdrop.
func (l *Learner) warnForgeable(maillog string) {
	dir := "/usr/sbin"
	if p := PostqueueBeside(l.o.Postsuper); p != "" {
		dir = filepath.Dir(p)
	}
	postlog := filepath.Join(dir, "postlog")
	setgid := false
	if fi, err := os.Stat(postlog); err == nil {
		setgid = fi.Mode()&os.ModeSetgid != 0
	}
	fields := []zap.Field{zap.String("file", l.o.LogFile), zap.String("postlog", postlog), zap.Bool("postlog_set_group_id", setgid)}
	switch {
	case maillog == "" || filepath.Clean(maillog) != filepath.Clean(l.o.LogFile):
		l.log.Warn(`learning from a log file whose lines can be forged: any local user can write lines like Postfix's into syslog's mail log ("logger -t postfix/smtp[1] ..."), and so make blocks learned and queue ids requeued; `+
			`learn.source = "journal" reads only records of Postfix's own user. Postfix's maillog_file is safer while postlog is not set-group-id (as Debian's package installs it)`, fields...)
	case setgid:
		l.log.Warn(`learning from Postfix's maillog_file, whose lines can be forged: postlog is set-group-id postdrop, so any local user can log through it with any tag ("postlog -t postfix/smtp ..."), and so make blocks learned and queue ids requeued; `+
			`learn.source = "journal" reads only records of Postfix's own user, or make postlog 0755 (as Debian's package installs it)`, fields...)
	default:
		l.log.Info(`learning from Postfix's maillog_file: local users cannot write it while postlog is not set-group-id (it is not now; "postfix set-permissions" would make it so, and any local user could then forge lines); `+
			`learn.source = "journal" does not depend on that`, fields...)
	}
}

// postconfValues returns the values of Postfix's parameters names, in
// the instance of configuration directory dir ("" = the default). A
// variable so that tests need no Postfix.
var postconfValues = func(ctx context.Context, dir string, names ...string) ([]string, error) {
	return postfix.Params(ctx, dir, false, names...)
}

// postfixLogging returns Postfix's mail_owner (Options.MailOwner when
// set; "postfix" when postconf cannot tell) and its maillog_file ("" when
// Postfix logs to syslog); err says why postconf could not tell.
func (l *Learner) postfixLogging(ctx context.Context) (owner, maillog string, err error) {
	owner = "postfix"
	v, err := postconfValues(ctx, l.o.PostfixConfig, "mail_owner", "maillog_file")
	if err == nil {
		owner, maillog = strings.TrimSpace(v[0]), strings.TrimSpace(v[1])
	}
	if l.o.MailOwner != "" {
		owner = l.o.MailOwner
	}
	return owner, maillog, err
}

// findJournal finds journalctl and the uid of owner.
func (l *Learner) findJournal(owner string) (journalSource, error) {
	cmd, err := journalctl(l.o.Journalctl)
	if err != nil {
		return journalSource{}, err
	}
	uid := owner
	if _, err := strconv.ParseUint(owner, 10, 32); err != nil {
		u, err := user.Lookup(owner)
		if err != nil {
			return journalSource{}, fmt.Errorf("mail_owner of Postfix: %w", err)
		}
		uid = u.Uid
	}
	return journalSource{cmd: cmd, uid: uid, owner: owner}, nil
}

// journalctl finds the journalctl command: name when given, else in PATH,
// /usr/bin or /bin (a service's PATH may lack it).
func journalctl(name string) (string, error) {
	if name != "" {
		return exec.LookPath(name)
	}
	if p, err := exec.LookPath("journalctl"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/journalctl", "/bin/journalctl"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("journalctl is not installed (not in PATH, /usr/bin nor /bin)")
}

// journalUsable says why the system journal cannot be read; nil when it
// can. `journalctl -n 0` alone would not do: it succeeds, printing a hint
// on stderr, where there are no journal files, and for a user who may
// read only their own. A variable so that tests can pretend.
var journalUsable = func(ctx context.Context, js journalSource) error {
	if _, err := os.Stat(journaldSocket); err != nil {
		return fmt.Errorf("systemd-journald is not running: %w", err)
	}
	if err := systemJournalReadable(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, js.cmd, "--system", "-n", "0", "--quiet", "--no-pager").CombinedOutput(); err != nil {
		return fmt.Errorf("%s --system -n 0: %w: %s", js.cmd, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// systemJournalReadable opens the system journal of this machine, in
// /var/log/journal or (volatile storage) /run/log/journal.
func systemJournalReadable() error {
	id, _ := os.ReadFile("/etc/machine-id")
	machine := strings.TrimSpace(string(id))
	if machine == "" {
		machine = "*"
	}
	var denied error
	for _, dir := range journalDirs {
		files, _ := filepath.Glob(filepath.Join(dir, machine, "system.journal"))
		for _, name := range files {
			f, err := os.Open(name)
			if err == nil {
				f.Close()
				return nil
			}
			denied = err
		}
	}
	if denied != nil {
		return fmt.Errorf("the system journal is not readable (the daemon's user needs group adm or systemd-journal): %w", denied)
	}
	return fmt.Errorf("no system journal in %s (journald's Storage=none?)", strings.Join(journalDirs, " or "))
}

// journalRecord is what the learner reads of one journal record.
type journalRecord struct {
	uid     string    // _UID
	ident   string    // SYSLOG_IDENTIFIER
	pid     string    // SYSLOG_PID, else _PID
	message string    // MESSAGE
	at      time.Time // __REALTIME_TIMESTAMP
	cursor  string    // __CURSOR
}

// parseRecord parses one line of `journalctl --output=json`. A field
// holds a string, or an array of bytes when it is not valid UTF-8 (or
// has control characters), or null when it was too long (without --all);
// a field given twice is an array of its values, which no field read here
// should be: it is left empty.
func parseRecord(data []byte) (journalRecord, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return journalRecord{}, err
	}
	r := journalRecord{uid: field(raw["_UID"]), ident: field(raw["SYSLOG_IDENTIFIER"]),
		pid: field(raw["SYSLOG_PID"]), message: field(raw["MESSAGE"]), cursor: field(raw["__CURSOR"])}
	if r.pid == "" {
		r.pid = field(raw["_PID"])
	}
	if r.cursor == "" {
		return journalRecord{}, errors.New("a journal record without __CURSOR")
	}
	if us, err := strconv.ParseInt(field(raw["__REALTIME_TIMESTAMP"]), 10, 64); err == nil {
		r.at = time.UnixMicro(us)
	}
	return r, nil
}

// field is the value of a journal field in JSON: a string or an array
// of bytes; "" for anything else.
func field(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return ""
	}
	switch v[0] {
	case '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	case '[':
		var b []uint8 // JSON numbers, not base64: not []byte
		var n []int
		if json.Unmarshal(v, &n) != nil {
			return ""
		}
		for _, c := range n {
			if c < 0 || c > 255 {
				return ""
			}
			b = append(b, uint8(c))
		}
		return string(b)
	}
	return ""
}

// handleRecord learns from one journal record that is a delivery agent's
// of Postfix: its SYSLOG_IDENTIFIER is one, and its _UID, which journald
// sets from the sender's credentials, is Postfix's mail_owner (uid).
// journalctl already asked for that _UID only: checking it again costs
// nothing and does not depend on journalctl's filter.
func (l *Learner) handleRecord(r journalRecord, uid string, now time.Time) {
	if !agentRE.MatchString(r.ident) {
		return // Postfix's qmgr, smtpd, cleanup ...
	}
	if r.uid != uid {
		l.distrust(SourceJournal, "a journal record of a delivery agent's name, not from Postfix's user",
			zap.String("_UID", r.uid), zap.String("want_uid", uid), zap.String("SYSLOG_IDENTIFIER", r.ident),
			zap.String("message", short(r.message)))
		return
	}
	pid := r.pid
	if _, err := strconv.ParseUint(pid, 10, 64); err != nil {
		pid = "0"
	}
	line := r.ident + "[" + pid + "]: " + r.message
	d, ok, misplaced := parseLine(line)
	if misplaced {
		l.distrust(SourceJournal, "a delivery result inside a message of Postfix's", zap.String("line", short(line)))
	}
	if !ok {
		return
	}
	d.Time = r.at
	l.handleDelivery(d, now)
}

// followJournal learns from Postfix's records in the journal until ctx
// ends.
func (l *Learner) followJournal(ctx context.Context, js journalSource) error {
	l.log.Info("learning from the journal: records of Postfix's delivery agents, by the journal's trusted _UID",
		zap.String("journalctl", js.cmd), zap.String("mail_owner", js.owner), zap.String("uid", js.uid))
	sv := l.startSaving()
	defer sv.finish()
	records := make(chan journalRecord, 256)
	rctx, cancel := context.WithCancel(ctx)
	read := make(chan struct{})
	go func() {
		defer close(read)
		l.readJournal(rctx, js, records)
	}()
	defer func() { cancel(); <-read }() // before the last save
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sv.every.C:
			sv.tick()
		case <-sv.soon.C:
			sv.soonDue()
		case r := <-records:
			l.handleRecord(r, js.uid, l.now())
			l.s.SetJournalPos(JournalPos{Cursor: r.cursor, Time: r.at})
			sv.changed()
		}
	}
}

// readJournal runs journalctl until ctx ends, starting it again when it
// stops, and sends the records it prints to out, in order.
func (l *Learner) readJournal(ctx context.Context, js journalSource, out chan<- journalRecord) {
	pos := l.s.JournalPos()
	wait := l.restartMin
	failed := 0 // runs in a row that gave no record
	for {
		args := journalArgs(js.uid, pos, l.now().Add(-l.o.BlockTTL))
		started := time.Now()
		n, err := l.journalctlOnce(ctx, js.cmd, args, out, &pos)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) >= l.restartMax {
			wait = l.restartMin
		}
		if failed++; n > 0 {
			failed = 0
		}
		fields := []zap.Field{zap.Strings("command", append([]string{js.cmd}, args...)), zap.Int("records", n),
			zap.Duration("restart_in", wait), zap.Error(err)}
		resumed := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--after-cursor=") })
		if resumed && (failed >= 3 || strings.Contains(strings.ToLower(err.Error()), "cursor")) {
			// A cursor journalctl cannot seek to ("Failed to seek to
			// cursor: Invalid argument"): go on from when its record
			// was logged.
			fields = append(fields, zap.String("cursor_dropped", pos.Cursor))
			pos.Cursor = ""
		}
		l.log.Error("journalctl stopped: starting it again; nothing is learned meanwhile", fields...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, l.restartMax)
	}
}

// journalArgs are journalctl's arguments for the records of uid after
// pos; from since when there is no position, or when it is older.
func journalArgs(uid string, pos JournalPos, since time.Time) []string {
	// --merge: since systemd 250, --follow alone implies --boot, the boot
	// id /proc gives. Under the unit's sandbox (ProtectProc=, a /proc of
	// its own) in a container that is the host kernel's, not the
	// container's journal's, and journalctl waited for records of a boot
	// it never saw, silently (measured in systemd-nspawn, systemd 252).
	// It would also skip what was written after the saved cursor but
	// before a reboot. Records are chosen by _UID and the cursor instead.
	args := []string{"--follow", "--merge", "--no-tail", "--no-pager", "--all", "--output=json",
		"--output-fields=_UID,SYSLOG_IDENTIFIER,SYSLOG_PID,_PID,MESSAGE"}
	if pos.Cursor != "" && (pos.Time.IsZero() || pos.Time.After(since)) {
		args = append(args, "--after-cursor="+pos.Cursor)
	} else {
		if pos.Time.After(since) {
			since = pos.Time
		}
		args = append(args, "--since=@"+strconv.FormatInt(since.Unix(), 10))
	}
	return append(args, "_UID="+uid)
}

// maxRecord bounds one line of journalctl's output; a longer record is
// skipped. Postfix's own lines are a few kilobytes at most.
const maxRecord = 1 << 20

// journalctlOnce runs journalctl once, sending what it prints to out
// until it exits or ctx ends, and moving pos past each record sent. It
// returns how many records it sent and why journalctl stopped.
func (l *Learner) journalctlOnce(ctx context.Context, name string, args []string, out chan<- journalRecord, pos *JournalPos) (int, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// Its own process group, killed whole: nothing it started may keep
	// the pipe open after it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stderr := &stderrLog{log: l.log}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, bad := 0, 0
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := readLine(r, maxRecord)
		if len(line) > 0 && line[0] == '{' {
			rec, perr := parseRecord(line)
			if perr != nil {
				if bad == 0 {
					l.log.Warn("a line of journalctl's output that is not a journal record", zap.Error(perr), zap.String("line", short(string(line))))
				}
				bad++
			} else {
				select {
				case out <- rec:
					n++
					*pos = JournalPos{Cursor: rec.cursor, Time: rec.at}
				case <-ctx.Done():
				}
			}
		}
		if err != nil || ctx.Err() != nil {
			break
		}
	}
	err = cmd.Wait()
	if err == nil {
		err = errors.New("exited")
	}
	if last := stderr.last(); last != "" {
		err = fmt.Errorf("%w: %s", err, last)
	}
	return n, err
}

// readLine reads one line without its newline; a line longer than max
// is read to its end and returned empty.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	long := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !long {
			if len(line)+len(chunk) > max {
				long, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), err
	}
}

// stderrLog logs what journalctl writes on its standard error (the
// first lines of each run, at warning) and keeps its last line.
type stderrLog struct {
	log     *zap.Logger
	mu      sync.Mutex
	partial []byte
	lines   int
	lastOne string
}

const maxStderrLines = 20

func (s *stderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(s.partial[:i])); line != "" {
			s.lastOne = line
			if s.lines < maxStderrLines {
				s.log.Warn("journalctl: " + line)
			}
			s.lines++
		}
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 4096 {
		s.partial = s.partial[:0]
	}
	return len(p), nil
}

func (s *stderrLog) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if line := strings.TrimSpace(string(s.partial)); line != "" {
		return line
	}
	return s.lastOne
}
