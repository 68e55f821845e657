// Package learn follows Postfix's delivery log — its records in the
// journal, which only Postfix's own user can write (journal.go), or a log
// file (follow.go) — and learns which destinations refuse our sending IP
// (Gmail's IP-reputation rejects, Microsoft's S3140/S3150, "blocked using
// zen.spamhaus.org", Yahoo's TSS04 ...), so that mxdetour-policyd routes
// their recipients through the relay until the block expires — or, for a
// refusal of our IPv6 address only (Gmail's IPv6 sending guidelines, a
// blocklist quoting our IPv6 address), through the ipv4 transport.
// Learned blocks and the position read (journal cursor, file offset) are
// kept in a state file that survives restarts. Each new block is reported
// through Options.OnBlock, for the postmaster's alert (AlertEvent).
//
// Requeueing (learn.requeue = true) runs `postqueue -i QUEUEID` for the
// deferred messages a block line named: Postfix's queue manager then loads
// them again at once, resolves their recipients again through the
// socketmap transport_maps, and they take the new route. postqueue is the
// one beside learn.postsuper. Unlike `postsuper -r` it needs no root:
// membership of Postfix's setgid group (postdrop), which the packages
// give the mxdetour user where the group exists, works under the shipped
// unit's NoNewPrivileges=yes. (postsuper -r would also drop a FILTER the
// policy service set, and give the message a new queue id.)
package learn

import (
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nxadm/tail"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/domain"
	"github.com/mxdetour/mxdetour/policyd/block"
)

// Options configure a Learner.
type Options struct {
	// Source is where refusals are learned from: SourceJournal, SourceFile
	// (LogFile) or SourceAuto ("" too): the journal where it can be read
	// and Postfix logs to it, else the file (journal.go).
	Source string
	// Journalctl is the journalctl command; "" finds it in PATH, /usr/bin
	// or /bin.
	Journalctl string
	// MailOwner is the user Postfix's processes run as, by name or uid;
	// "" asks postconf for mail_owner ("postfix" when it cannot tell).
	MailOwner     string
	LogFile       string
	BlockTTL      time.Duration
	Requeue       bool
	Postsuper     string // postsuper's command (postqueue is the one beside it); may start with sudo
	PostfixConfig string // postqueue -c DIR
	// RequeueDelay waits before requeueing: Postfix's queue manager keeps
	// the last resolved route of an address for 30 seconds, so a message
	// requeued sooner would take the old route again. Default 35 s.
	RequeueDelay time.Duration
	// ProviderOf names the provider of the host that refused, by its name
	// or by the network of its address (relay=host[addr]); "" when none
	// is recognised (never the default provider). A refusal the
	// classifier calls provider-wide makes a block of every destination
	// of that provider.
	ProviderOf func(host string, addr netip.Addr) string
	SkipHosts  []string // our own relay, "host" or "host:port": its refusals say nothing of our IP
	// SaveDelay is how soon a learned or extended block is saved, so that
	// `blocks` shows what the daemon knows; changes within it are saved
	// together. Default 1 s.
	SaveDelay time.Duration
	// SaveEvery saves the log position, and looks for changes another
	// process made to the state file (`blocks forget`). Default 10 s.
	SaveEvery time.Duration
	// InotifyRetry is how long the log is polled after inotify failed
	// under a running follower before inotify is tried again. Default 10
	// minutes.
	InotifyRetry time.Duration
	// OnBlock, when set, is told of each block learned (fresh) and of
	// each known block that changed route: an IPv4-only block that now
	// needs the relay (not fresh). A refusal of a known block seen again
	// is not reported. It is called from Run's own goroutine, never with
	// a lock held, one call at a time; a slow OnBlock delays later calls,
	// never the learner (at most maxEvents wait; more are dropped with a
	// warning). alert.Alerter.Notify with AlertEvent fits.
	OnBlock func(b Block, fresh bool)
	// OnOwnFault, when set, is told of each refusal that is our own
	// configuration's fault (ownfault.go), from Run's goroutine: it must
	// not wait. alert.Alerter.NotifyOnce with OwnFault.Key fits.
	OnOwnFault func(OwnFault)
	// OnDelivery, when set, is told of every delivery result with a
	// recipient, refusal or not, before anything is learned from it (the
	// outbound limits' failure-ratio signal). It is called from the
	// reading goroutine, one result at a time, and must not block.
	OnDelivery func(d Delivery)
}

// blockEvent is a call of Options.OnBlock waiting to be made.
type blockEvent struct {
	b     Block
	fresh bool
}

// maxEvents bounds the OnBlock calls waiting.
const maxEvents = 256

// Learner turns delivery log lines into learned blocks.
type Learner struct {
	o           Options
	c           *Classifier
	s           *Store
	log         *zap.Logger
	now         func() time.Time
	mu          sync.Mutex
	dirty       bool                 // something to save
	blocksDirty bool                 // ... and it is a block: save soon
	done        map[string]time.Time // queue ids requeued, until when to remember them
	pruned      time.Time            // when done was last pruned
	old         oldLines             // refusals too old to learn, not yet reported
	wg          sync.WaitGroup
	events      chan blockEvent // for OnBlock
	polling     atomic.Bool     // the log is polled, not followed with inotify
	untrusted   map[string]bool // sources whose untrusted lines were reported (once each)
	source      string          // what Run reads: "journal" or the log file; under mu
	// restartMin and restartMax bound the wait before journalctl is
	// started again after it stopped; the wait doubles from one to the
	// other, and starts again from restartMin after a run that lasted
	// restartMax.
	restartMin, restartMax time.Duration
}

// oldLines counts refusals older than the block lifetime, skipped while
// reading a log from its start, for one info line per read.
type oldLines struct {
	n             int
	first, last   time.Time // when the oldest and newest of them were logged
	nAtLastReport int       // n at the previous tick: unchanged means the catch-up is over
}

// maxRequeues bounds the queue ids remembered as requeued (and the
// requeues waiting): beyond it, deferred messages wait for Postfix's own
// retry, which also takes the relay.
const maxRequeues = 10000

// NewLearner returns a Learner writing into s.
func NewLearner(o Options, c *Classifier, s *Store, log *zap.Logger) *Learner {
	if o.RequeueDelay == 0 {
		o.RequeueDelay = 35 * time.Second
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = 10 * time.Second
	}
	if o.SaveDelay <= 0 {
		o.SaveDelay = time.Second
	}
	if o.InotifyRetry <= 0 {
		o.InotifyRetry = 10 * time.Minute
	}
	if o.ProviderOf == nil {
		o.ProviderOf = func(string, netip.Addr) string { return "" }
	}
	return &Learner{o: o, c: c, s: s, log: log, now: time.Now, done: map[string]time.Time{},
		events: make(chan blockEvent, maxEvents), untrusted: map[string]bool{},
		restartMin: time.Second, restartMax: time.Minute}
}

// Handle learns from one line of the log file.
func (l *Learner) Handle(line string, now time.Time) {
	d, ok, misplaced := parseLine(line)
	if misplaced {
		l.distrust(SourceFile, "a delivery result inside another program's message (only a tag's own line counts)",
			zap.String("line", short(line)))
	}
	if ok {
		l.handleDelivery(d, now)
	}
}

// distrust reports a line or record that looked like a delivery result
// but that Postfix may not have written: it is never learned from. Only
// the first of each source is logged, for the log is the attacker's to
// fill.
func (l *Learner) distrust(source, why string, fields ...zap.Field) {
	l.mu.Lock()
	seen := l.untrusted[source]
	l.untrusted[source] = true
	l.mu.Unlock()
	if seen {
		return
	}
	l.log.Warn("not learned: "+why+"; further such lines are ignored without a word",
		append([]zap.Field{zap.String("source", source)}, fields...)...)
}

// handleDelivery learns from one delivery result, when it is a refusal
// of our address; now is when it was read.
func (l *Learner) handleDelivery(d Delivery, now time.Time) {
	if d.Recipient == "" {
		return
	}
	if l.o.OnDelivery != nil {
		l.o.OnDelivery(d)
	}
	for _, h := range l.o.SkipHosts {
		host, port, hasPort := strings.Cut(h, ":")
		if strings.EqualFold(host, d.RelayHost) && (!hasPort || port == strconv.Itoa(d.RelayPort)) {
			return
		}
	}
	if !d.Time.IsZero() && now.Sub(d.Time) < l.o.BlockTTL {
		l.reportOld(true) // reading has reached recent lines
	}
	v := l.c.Classify(d)
	if v.OwnFault {
		l.ownFault(d, v, now)
		return
	}
	if !v.Block {
		if d.Status != "sent" {
			l.log.Debug("delivery failure is not a block of our IP", zap.String("queue_id", d.QueueID),
				zap.String("recipient", d.Recipient), zap.String("why", v.Why))
		}
		return
	}
	dom, err := domain.FromAddress(d.Recipient)
	if err != nil {
		return
	}
	when := d.Time
	if when.IsZero() || when.After(now) {
		when = now
	}
	expires := when.Add(l.o.BlockTTL)
	if !now.Before(expires) {
		l.countOld(when) // an old line: that block is over
		return
	}
	b := Block{Domain: dom, MXHost: d.RelayHost, Provider: l.o.ProviderOf(d.RelayHost, d.RelayAddr), Kind: v.Kind,
		Route: v.Route(), Reply: d.Reply, QueueIDs: []string{d.QueueID}, Learned: when, Expires: expires,
		Client: v.Client}
	if v.ProviderWide && b.Provider != "" {
		b.Scope = block.ScopeProvider
	}
	cur, c := l.s.learn(b)
	l.mu.Lock()
	l.dirty, l.blocksDirty = true, true
	l.mu.Unlock()
	if c != unchanged {
		l.s.learned(cur)
	}
	if c == added || c == rerouted {
		l.log.Warn("learned: "+Summary(cur, c == added),
			zap.String("domain", dom), zap.String("mx_host", d.RelayHost), zap.String("provider", b.Provider), zap.String("scope", cur.Scope),
			zap.String("kind", cur.Kind), zap.String("route", cur.Route), zap.Time("until", cur.Expires),
			zap.String("reply", short(d.Reply)), zap.String("queue_id", d.QueueID))
		l.tell(blockEvent{cur, c == added})
	}
	// SOFTBOUNCE is a 5xx turned into a deferral by soft_bounce = yes.
	if l.o.Requeue && (d.Status == "deferred" || d.Status == "SOFTBOUNCE") && now.Sub(when) < time.Hour {
		l.requeueLater(d.QueueID, now)
	}
}

func short(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

var queueIDRE = regexp.MustCompile(`^[0-9A-Za-z]+$`)

// requeueLater runs postqueue -i for id after RequeueDelay, once while
// its block lasts: the ids are remembered for the block lifetime (at
// least an hour) after their requeue, and at most maxRequeues of them.
func (l *Learner) requeueLater(id string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.pruned) > time.Minute || len(l.done) >= maxRequeues {
		l.pruned = now
		for k, until := range l.done {
			if !now.Before(until) {
				delete(l.done, k)
			}
		}
	}
	if _, ok := l.done[id]; ok || !queueIDRE.MatchString(id) {
		return
	}
	if len(l.done) >= maxRequeues {
		l.log.Warn("too many requeues pending; this message waits for Postfix's next retry", zap.String("queue_id", id))
		return
	}
	l.done[id] = now.Add(l.o.RequeueDelay + max(l.o.BlockTTL, time.Hour))
	l.wg.Add(1)
	time.AfterFunc(l.o.RequeueDelay, func() {
		defer l.wg.Done()
		l.requeue(id)
	})
}

func (l *Learner) requeue(id string) {
	argv := PostfixArgv(l.o.Postsuper, l.o.PostfixConfig, "postqueue", "-i", id)
	if argv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		l.log.Error("requeue failed: the message waits for Postfix's next retry", zap.String("queue_id", id), zap.Strings("command", argv),
			zap.Error(err), zap.String("output", strings.TrimSpace(string(out))))
		return
	}
	l.log.Info("asked Postfix to deliver a deferred message now, on its new route", zap.String("queue_id", id))
}

// PostfixArgv is the command line of Postfix's command name (postsuper or
// postqueue) as learn.postsuper says: postsuper runs as written there (it
// may start with sudo), postqueue from the same directory without sudo
// (it needs no privilege); both with -c dir when dir is set, then args.
// nil when postsuper is empty.
func PostfixArgv(postsuper, dir, name string, args ...string) []string {
	argv := strings.Fields(postsuper)
	if len(argv) == 0 {
		return nil
	}
	if name == "postqueue" {
		argv = []string{PostqueueBeside(postsuper)}
	}
	if dir != "" {
		argv = append(argv, "-c", dir)
	}
	return append(argv, args...)
}

// PostqueueBeside is the postqueue in the directory of the postsuper that
// command runs (its last word: "/usr/bin/sudo -n /usr/sbin/postsuper"
// gives /usr/sbin/postqueue, run without sudo); "" when command is empty.
func PostqueueBeside(command string) string {
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return ""
	}
	return filepath.Join(filepath.Dir(argv[len(argv)-1]), "postqueue")
}

// startAt resumes at the stored position when it is still the same file
// and not past its end; otherwise from the beginning (refusals older than
// the block lifetime are skipped by Handle, and counted in one info line).
func (l *Learner) startAt() *tail.SeekInfo {
	o := l.s.Offset()
	fi, err := os.Stat(l.o.LogFile)
	if err != nil || o.Path != l.o.LogFile || o.Inode != inode(l.o.LogFile) || o.Pos > fi.Size() {
		return nil
	}
	return &tail.SeekInfo{Offset: o.Pos, Whence: io.SeekStart}
}

// saveIfDirty saves what changed, or else merges what another process
// changed in the state file.
func (l *Learner) saveIfDirty() {
	l.mu.Lock()
	dirty := l.dirty || l.s.unsaved.Load()
	l.dirty, l.blocksDirty = false, false
	l.mu.Unlock()
	if !dirty {
		if err := l.s.Refresh(); err != nil {
			l.log.Error("reading the state file", zap.Error(err))
		}
		return
	}
	if err := l.s.Save(); err != nil {
		l.log.Error("saving learned blocks", zap.Error(err))
		l.mu.Lock()
		l.dirty = true // try again at the next tick
		l.mu.Unlock()
	}
}

// Wait waits for scheduled requeues (tests, shutdown).
func (l *Learner) Wait() { l.wg.Wait() }

func inode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// tell queues a call of OnBlock; it never waits.
func (l *Learner) tell(e blockEvent) {
	if l.o.OnBlock == nil {
		return
	}
	select {
	case l.events <- e:
	default:
		l.log.Warn("too many blocks learned at once: the postmaster is not told of this one",
			zap.String("domain", e.b.Domain), zap.String("route", e.b.Route))
	}
}

// notify calls OnBlock for the queued events until stop is closed, then
// for those still queued, and closes done.
func (l *Learner) notify(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case e := <-l.events:
			l.o.OnBlock(e.b, e.fresh)
		case <-stop:
			for {
				select {
				case e := <-l.events:
					l.o.OnBlock(e.b, e.fresh)
				default:
					return
				}
			}
		}
	}
}

// countOld counts a refusal logged at when, too old to learn.
func (l *Learner) countOld(when time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := &l.old
	if o.n == 0 || when.Before(o.first) {
		o.first = when
	}
	if when.After(o.last) {
		o.last = when
	}
	o.n++
}

// reportOld logs, once per read of a log from its start, how many
// refusals were too old to learn: when reading reaches recent lines or
// ends (done), or at a tick that found no new old ones (the log ends with
// old lines).
func (l *Learner) reportOld(done bool) {
	l.mu.Lock()
	o := l.old
	if o.n == 0 || (!done && o.n != o.nAtLastReport) {
		l.old.nAtLastReport = o.n
		l.mu.Unlock()
		return
	}
	l.old = oldLines{}
	l.mu.Unlock()
	l.log.Info("refusals older than block_ttl in the delivery log: not learned",
		zap.Int("count", o.n), zap.String("source", l.sourceName()), zap.Duration("block_ttl", l.o.BlockTTL),
		zap.Time("oldest", o.first), zap.Time("newest", o.last))
}
