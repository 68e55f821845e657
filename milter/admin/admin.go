// Package admin holds the administration commands of mxdetour-milter,
// run by hand beside the daemon (one binary): keygen writes DKIM keys and
// their records, doctor checks what DNS publishes for them, explain says
// what the milter would do with a message, and import-opendkim translates
// an OpenDKIM configuration. Each takes its arguments and writers and
// returns the exit status.
package admin

import "github.com/mxdetour/mxdetour/internal/daemon"

// Exit codes: 78 (EX_CONFIG) means the usage or the configuration is
// wrong; 1 any other failure. The doctor exits as Nagios plugins do.
const (
	exitFailure = daemon.ExitFailure
	exitConfig  = daemon.ExitConfig
)
