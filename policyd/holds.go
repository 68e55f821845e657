package main

// Outbound limits: the daemon's limiter (built from [[limits]] and
// [compromise], kept across reloads) and the `holds` command that lists
// and releases what it held.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/geo"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
)

// limitsState is where the limiter keeps its state: limits.json beside
// learn's state file; "" (none) when that is no absolute path.
func limitsState(cfg *config.Config) string {
	if !filepath.IsAbs(cfg.Learn.StateFile) {
		return ""
	}
	return limits.StatePath(cfg.Learn.StateFile)
}

// limitOptions maps [[limits]], [compromise] and milter.trusted_networks;
// src is the country source (nil: countries are not counted).
func limitOptions(cfg *config.Config, src geo.Source) limits.Options {
	o := limits.Options{Trusted: cfg.Milter.TrustedNetworks, Geo: src}
	for _, l := range cfg.Limits {
		o.Limits = append(o.Limits, limits.Limit{Key: limits.KeyType(l.Key), Max: l.Max, Window: l.Window.Duration,
			Provider: l.DestinationProvider, Action: limits.Action(l.Action), Exempt: l.Exempt, Raise: l.Raise})
	}
	if c := cfg.Compromise; c.Enabled {
		o.Compromise = limits.Compromise{MaxCountries: c.MaxCountries, MaxClients: c.MaxClients, Window: c.Window.Duration}
	}
	if c := cfg.Compromise; c.Failures {
		o.Failures = limits.Failures{Ratio: c.FailureRatio, Min: c.FailureMin, Window: c.FailureWindow.Duration}
	}
	return o
}

// limitsGeo opens the country source of [milter.geo] for the compromise
// signal; nil when the signal is off or no source is set. It reuses old
// when neither the source nor the resolver changed.
type limitsGeo struct {
	opts geo.Options
	r    *lookup.Client
	src  geo.Source
}

func openLimitsGeo(cfg *config.Config, r *lookup.Client, old *limitsGeo) (*limitsGeo, error) {
	if !cfg.Compromise.Enabled {
		return nil, nil
	}
	g := &limitsGeo{opts: setup.Geo(cfg.Milter.Geo), r: r}
	if old != nil && old.r == r && reflect.DeepEqual(old.opts, g.opts) {
		return old, nil
	}
	src, err := geo.Open(g.opts, r)
	if err != nil {
		return nil, fmt.Errorf("compromise: %w", err)
	}
	g.src = src
	return g, nil
}

func (g *limitsGeo) source() geo.Source {
	if g == nil {
		return nil
	}
	return g.src
}

// startLimits builds the limiter, loads its state, hands it to the
// policy responder and starts saving.
func (d *policyd) startLimits(cfg *config.Config) error {
	g, err := openLimitsGeo(cfg, d.runtime().resolver, nil)
	if err != nil {
		return configError{err}
	}
	d.limitsGeo = g
	var store limits.Store = limits.NewMemory()
	if cfg.Fleet.RedisURL != "" {
		// With a fleet every host counts into the same Redis keys (a
		// reload keeps the store, as it keeps [fleet]), through the
		// fleet's connection; without learning there is no fleet to
		// share, and the counters open their own.
		conn := (*fleet.Conn)(nil)
		if d.fleet != nil {
			conn = d.fleet.Conn
		} else {
			if conn, _, err = openFleet(cfg); err != nil {
				return configError{err}
			}
			d.countersConn = conn
		}
		d.counters = fleet.NewCounters(conn, limits.NewMemory(), d.log.Named("limits"))
		store = d.counters
	}
	d.limiter = limits.New(limitOptions(cfg, g.source()), store, d.alerts, d.log.Named("limits"))
	if path := limitsState(cfg); path != "" {
		if err := d.limiter.Open(path); err != nil {
			return err
		}
	}
	d.limiter.Run()
	d.limited.Store(d.limiter)
	d.resp.SetLimits(d.limiter)
	if d.limiter.Active() {
		d.log.Info("outbound limits on", zap.Int("limits", len(cfg.Limits)), zap.Bool("compromise", cfg.Compromise.Enabled),
			zap.Bool("failure_ratio", cfg.Compromise.Failures))
	}
	return nil
}

// delivered hands the learner's delivery results to the limits'
// failure-ratio signal; cls tells the failures that are refusals of our
// address, which are not the account's.
func (d *policyd) delivered(cls *learn.Classifier) func(learn.Delivery) {
	return func(dv learn.Delivery) {
		if l := d.limited.Load(); l != nil {
			l.Delivered(limits.Result{QueueID: dv.QueueID, Recipient: dv.Recipient, Status: dv.Status, DSN: dv.DSN, At: dv.Time},
				func() bool { return cls.Classify(dv).Block })
		}
	}
}

// reloadLimits applies next's limits; the counters stay.
func (d *policyd) reloadLimits(next *config.Config, rt *runtime) {
	g, err := openLimitsGeo(next, rt.resolver, d.limitsGeo)
	if err != nil {
		d.log.Error("reload: the compromise signal keeps its country source", zap.Error(err))
		g = d.limitsGeo
	}
	d.limitsGeo = g
	d.limiter.Configure(limitOptions(next, g.source()))
}

// stopLimits saves the counters.
func (d *policyd) stopLimits() {
	if d.limiter != nil {
		d.limiter.Stop()
	}
	if d.countersConn != nil {
		d.countersConn.Close()
	}
}

const holdsUsage = "usage: mxdetour-policyd holds [-config FILE] [-json] [release KEY | counts KEY]"

// heldGroup is one key's held messages, as `holds -json` prints them.
type heldGroup struct {
	Key      string       `json:"key"`
	Limit    string       `json:"limit,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	Messages []queuedMail `json:"messages"`
}

// queuedMail is one message of `postqueue -j`.
type queuedMail struct {
	Queue      string    `json:"queue_name"`
	ID         string    `json:"queue_id"`
	Arrival    int64     `json:"arrival_time"`
	Size       int64     `json:"message_size"`
	Sender     string    `json:"sender"`
	Recipients []rcptRec `json:"recipients"`
}

type rcptRec struct {
	Address string `json:"address"`
}

// holdsCommand lists the messages the limits held, by key, or releases
// one key's: `holds [-config FILE] [-json]`, `holds release KEY`; `holds
// counts KEY` shows a key's live counts (counts.go).
//
// Postfix keeps no reason with a held message (neither `postqueue -j` nor
// the queue file carry the HOLD text), so the daemon records the queue id
// of every message it holds, learned from the transaction's next request
// (second RCPT, DATA or END-OF-MESSAGE), in its state file; this command
// joins those records with Postfix's hold queue.
func holdsCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd holds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitConfig
	}
	if fs.NArg() > 0 && fs.Arg(0) == "counts" {
		// Flags may follow the word too: `holds counts -json local_user=alice`.
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return exitConfig
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, holdsUsage)
			return exitConfig
		}
		cfg, _, err := config.LoadDefault(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitConfig
		}
		return countsCommand(cfg, fs.Arg(0), *asJSON, stdout, stderr)
	}
	release := fs.NArg() == 2 && fs.Arg(0) == "release"
	if fs.NArg() != 0 && !release {
		fmt.Fprintln(stderr, holdsUsage)
		return exitConfig
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	path := limitsState(cfg)
	if path == "" {
		fmt.Fprintln(stderr, "learn.state_file is no absolute path: limits keep no state")
		return exitConfig
	}
	groups, other, err := heldMail(cfg, path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	if release {
		return releaseKey(cfg, path, fs.Arg(1), groups, stdout, stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"keys": groups, "other": other})
		return 0
	}
	printHolds(stdout, groups, other)
	return 0
}

// heldMail returns the hold queue grouped by the key that held each
// message, and the held messages the limits did not hold (or whose queue
// id they never learned).
func heldMail(cfg *config.Config, path string) ([]heldGroup, []queuedMail, error) {
	records, err := limits.ReadHeld(path)
	if err != nil {
		return nil, nil, err
	}
	queue, err := holdQueue(cfg)
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]limits.Held{}
	for _, h := range records {
		byID[h.QueueID] = h
	}
	var groups []heldGroup
	var other []queuedMail
	for _, m := range queue {
		h, ok := byID[m.ID]
		if !ok {
			other = append(other, m)
			continue
		}
		i := slices.IndexFunc(groups, func(g heldGroup) bool { return g.Key == h.Key })
		if i < 0 {
			groups = append(groups, heldGroup{Key: h.Key, Limit: h.Limit, Reason: h.Reason})
			i = len(groups) - 1
		}
		groups[i].Messages = append(groups[i].Messages, m)
	}
	slices.SortFunc(groups, func(a, b heldGroup) int { return strings.Compare(a.Key, b.Key) })
	return groups, other, nil
}

// holdQueue runs `postqueue -j` and returns the messages on hold.
func holdQueue(cfg *config.Config) ([]queuedMail, error) {
	out, err := postfixCmd(cfg, "postqueue", nil, "-j")
	if err != nil {
		return nil, err
	}
	var held []queuedMail
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var m queuedMail
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("postqueue -j: %w", err)
		}
		if m.Queue == "hold" {
			held = append(held, m)
		}
	}
	return held, sc.Err()
}

// postfixCmd runs a Postfix command: postsuper as learn.postsuper says
// (it may start with sudo), postqueue from the same directory (it needs
// no privilege), each with -c learn.postfix_config when set.
func postfixCmd(cfg *config.Config, name string, stdin []byte, args ...string) ([]byte, error) {
	postsuper := cfg.Learn.Postsuper
	if strings.TrimSpace(postsuper) == "" {
		postsuper = "/usr/sbin/postsuper"
	}
	argv := learn.PostfixArgv(postsuper, cfg.Learn.PostfixConfig, name, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// releaseKey releases the held messages of key (as listed, or its value
// alone when one listed key has it), asks for immediate delivery, and
// resets the key's windows in the daemon.
func releaseKey(cfg *config.Config, path, key string, groups []heldGroup, stdout, stderr io.Writer) int {
	key, err := resolveKey(key, groups)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	var ids []string
	for _, g := range groups {
		if g.Key == key {
			for _, m := range g.Messages {
				ids = append(ids, m.ID)
			}
		}
	}
	if len(ids) > 0 {
		if _, err := postfixCmd(cfg, "postsuper", []byte(strings.Join(ids, "\n")+"\n"), "-H", "-"); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		for _, id := range ids { // released mail waits for the next queue run otherwise
			if _, err := postfixCmd(cfg, "postqueue", nil, "-i", id); err != nil {
				fmt.Fprintln(stderr, "warning:", err)
			}
		}
	}
	if err := limits.RequestRelease(path, key); err != nil {
		fmt.Fprintf(stderr, "released %d messages, but the windows of %s could not be reset: %v\n", len(ids), key, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "released %d held messages of %s %s; its windows are reset (a running mxdetour-policyd applies it within a second, a stopped one when it starts)\n",
		len(ids), key, strings.Join(ids, " "))
	return 0
}

// resolveKey accepts a key as listed ("sasl_username:alice",
// "local_user:www-data") or a bare value that exactly one listed key has
// ("alice").
func resolveKey(key string, groups []heldGroup) (string, error) {
	if limits.IsSubject(key) {
		return key, nil
	}
	var found []string
	for _, g := range groups {
		if _, v, _ := strings.Cut(g.Key, ":"); strings.EqualFold(v, key) {
			found = append(found, g.Key)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no held mail for %q; name the key as `holds` lists it, e.g. sasl_username:%s", key, key)
	}
	return "", fmt.Errorf("%q is ambiguous: %s", key, strings.Join(found, ", "))
}

func printHolds(w io.Writer, groups []heldGroup, other []queuedMail) {
	if len(groups) == 0 && len(other) == 0 {
		fmt.Fprintln(w, "no held messages")
		return
	}
	for _, g := range groups {
		fmt.Fprintf(w, "%s: %d held (%s)\n", g.Key, len(g.Messages), strings.TrimPrefix(g.Reason, "HOLD "))
		printQueued(w, g.Messages)
		fmt.Fprintf(w, "  release: mxdetour-policyd holds release %s\n", g.Key)
	}
	if len(other) > 0 {
		fmt.Fprintf(w, "held, but not by mxdetour's limits (or before it learned their queue id): %d\n", len(other))
		printQueued(w, other)
	}
}

func printQueued(w io.Writer, ms []queuedMail) {
	for _, m := range ms {
		rcpts := make([]string, len(m.Recipients))
		for i, r := range m.Recipients {
			rcpts[i] = "<" + r.Address + ">"
		}
		fmt.Fprintf(w, "  %s  %s  from=<%s>  to=%s\n", m.ID, time.Unix(m.Arrival, 0).UTC().Format(time.RFC3339),
			m.Sender, strings.Join(rcpts, ","))
	}
}
