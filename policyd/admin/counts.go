package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/server"
)

// liveCounts is what `holds counts KEY` prints.
type liveCounts struct {
	Key    string         `json:"key"`
	Source string         `json:"source"` // where the counts were read
	At     time.Time      `json:"at"`     // when they were counted
	Limits []limits.Usage `json:"limits"`
}

// saveWait is how long `holds counts` waits for the running daemon to
// save its counters (it looks for requests every second).
var saveWait = 3 * time.Second

// counts shows key's live counts against each [[limits]] entry
// that counts it, from the store the daemon counts in, counting nothing:
// with a [fleet], the shared counters in Redis; else the daemon's memory,
// which it saves to its state file when asked (a request file beside it,
// as `holds release` asks for a reset). A daemon that does not answer
// within saveWait is not running: its state file holds what it will
// count from at its next start.
func counts(cfg *config.Config, key string, asJSON bool, stdout, stderr io.Writer) int {
	subject, err := limits.ParseSubject(key)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	o := server.LimitOptions(cfg, nil)
	if len(o.Limits) == 0 {
		fmt.Fprintln(stderr, "no [[limits]] are configured")
		return daemon.ExitConfig
	}
	lc, err := readCounts(cfg, &o, subject, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitFailure
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(lc)
		return 0
	}
	printCounts(stdout, lc)
	return 0
}

func readCounts(cfg *config.Config, o *limits.Options, subject string, stderr io.Writer) (*liveCounts, error) {
	lc := &liveCounts{Key: subject}
	if cfg.Fleet.RedisURL != "" {
		conn, _, err := server.OpenFleet(cfg)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		view := fleet.NewCountView(conn)
		lc.At = time.Now()
		lc.Limits = limits.Usages(o, view, subject, lc.At)
		if view.Err() == nil {
			lc.Source = "the fleet's Redis (every host's counts)"
			return lc, nil
		}
		fmt.Fprintf(stderr, "the fleet's Redis does not answer (%v): showing what this host counted\n", view.Err())
	}
	path := server.LimitsState(cfg)
	if path == "" {
		return nil, fmt.Errorf("learn.state_file is no absolute path: limits keep no state")
	}
	lc.Source = "the running mxdetour-policyd"
	if !askSave(path) {
		lc.Source = "the state file (no mxdetour-policyd answered within " + saveWait.String() + ")"
	}
	snap, saved, err := limits.ReadCounters(path)
	if err != nil {
		return nil, err
	}
	lc.At = time.Now()
	if !saved.IsZero() && lc.Source != "the running mxdetour-policyd" {
		lc.At = saved
	}
	mem := limits.NewMemory()
	mem.Restore(snap, time.Now())
	lc.Limits = limits.Usages(o, mem, subject, time.Now())
	return lc, nil
}

// askSave asks the daemon to save its state now and waits until it did;
// false when no daemon answered (its request is withdrawn).
func askSave(path string) bool {
	req, err := limits.RequestSave(path)
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(saveWait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(req); os.IsNotExist(err) {
			return true
		}
	}
	_ = os.Remove(req)
	return false
}

func printCounts(w io.Writer, lc *liveCounts) {
	fmt.Fprintf(w, "%s, as counted by %s at %s:\n", lc.Key, lc.Source, lc.At.UTC().Format(time.RFC3339))
	if len(lc.Limits) == 0 {
		fmt.Fprintln(w, "  no [[limits]] entry counts this key")
	}
	for _, u := range lc.Limits {
		if u.Exempt {
			fmt.Fprintf(w, "  %-40s exempt\n", u.Limit+" ("+u.Window+")")
			continue
		}
		state := "within"
		if u.Count >= u.Max {
			state = "at the limit: the next recipient is " + map[limits.Action]string{limits.Hold: "held", limits.Defer: "deferred", limits.Reject: "rejected"}[u.Action]
		}
		fmt.Fprintf(w, "  %-40s %d/%d in %s  %s\n", u.Limit, u.Count, u.Max, u.Window, state)
	}
}
