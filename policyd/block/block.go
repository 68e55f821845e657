// Package block holds the value types that mxdetour-policyd's learner
// (policyd/learn: log tailing, state file, postsuper) and its decision
// (policyd/route) share, so that the decision imports no I/O.
package block

import "time"

// Block is a learned refusal of our sending IP by a destination: its
// domain and the MX host that refused, until Expires. A block of an MX
// host also covers the other domains that use that host.
type Block struct {
	Domain   string    `json:"domain"`
	MXHost   string    `json:"mx_host"`
	Provider string    `json:"provider,omitempty"`
	Kind     string    `json:"kind"`  // which pattern recognised the refusal ("gmail-ip-reputation", "dnsbl:ZONE" ...)
	Reply    string    `json:"reply"` // the refusal as Postfix logged it
	QueueIDs []string  `json:"queue_ids,omitempty"`
	Learned  time.Time `json:"learned"`       // the first refusal
	Seen     time.Time `json:"seen,omitzero"` // the latest refusal (zero: Learned)
	Expires  time.Time `json:"expires"`       // Seen plus the block lifetime
}

// LastSeen returns the time of the latest refusal that made or extended b.
func (b Block) LastSeen() time.Time {
	if b.Seen.After(b.Learned) {
		return b.Seen
	}
	return b.Learned
}

// Active reports whether b still applies at now.
func (b Block) Active(now time.Time) bool { return now.Before(b.Expires) }
