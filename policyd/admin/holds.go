package admin

// `holds`: the messages the outbound limits held, listed by key and
// released; `holds counts` (counts.go).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/server"
)

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

// Holds lists the messages the limits held, by key, or releases
// one key's: `holds [-config FILE] [-json]`, `holds release KEY`; `holds
// counts KEY` shows a key's live counts (counts.go).
//
// Postfix keeps no reason with a held message (neither `postqueue -j` nor
// the queue file carry the HOLD text), so the daemon records the queue id
// of every message it holds, learned from the transaction's next request
// (second RCPT, DATA or END-OF-MESSAGE), in its state file; this command
// joins those records with Postfix's hold queue.
func Holds(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxdetour-policyd holds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := daemon.ParseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 && fs.Arg(0) == "counts" {
		// Flags may follow the word too: `holds counts -json local_user=alice`.
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return daemon.ExitConfig
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, holdsUsage)
			return daemon.ExitConfig
		}
		cfg, _, err := config.LoadDefault(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return daemon.ExitConfig
		}
		return counts(cfg, fs.Arg(0), *asJSON, stdout, stderr)
	}
	release := fs.NArg() == 2 && fs.Arg(0) == "release"
	if fs.NArg() != 0 && !release {
		fmt.Fprintln(stderr, holdsUsage)
		return daemon.ExitConfig
	}
	cfg, _, err := config.LoadDefault(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	path := server.LimitsState(cfg)
	if path == "" {
		fmt.Fprintln(stderr, "learn.state_file is no absolute path: limits keep no state")
		return daemon.ExitConfig
	}
	groups, other, err := heldMail(cfg, path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitFailure
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
		return daemon.ExitFailure
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
			return daemon.ExitFailure
		}
		for _, id := range ids { // released mail waits for the next queue run otherwise
			if _, err := postfixCmd(cfg, "postqueue", nil, "-i", id); err != nil {
				fmt.Fprintln(stderr, "warning:", err)
			}
		}
	}
	if err := limits.RequestRelease(path, key); err != nil {
		fmt.Fprintf(stderr, "released %d messages, but the windows of %s could not be reset: %v\n", len(ids), key, err)
		return daemon.ExitFailure
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
