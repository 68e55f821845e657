// Package admin is mxdetour-policyd's commands for a person: check
// (which way an address goes, and why), blocks (learned blocks, listed and
// forgotten), holds (mail the outbound limits held, listed and released;
// a key's live counts) and wire/unwire (Postfix's configuration). Each
// takes its arguments after the command word and returns the exit code:
// 0, 1 (daemon.ExitFailure) or 78 (daemon.ExitConfig, usage or
// configuration).
package admin

import (
	"context"
	"time"
)

// ctxTimeout is a context for one step of a command.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
