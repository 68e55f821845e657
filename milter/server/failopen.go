package server

import (
	"context"
	"fmt"
	"io"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// FailOpen accepts every message untouched on systemd's socket while the
// configuration cannot be used (as Postfix's milter_default_action =
// accept would with the milter away, but without Postfix waiting on a
// socket nobody accepts), and starts again in full service at the first
// reload that finds the file usable (daemon.RunFailOpen). Run by hand, a
// bad file still exits 78.
func FailOpen(path string, reason error, stderr io.Writer) int {
	log, _, err := logging.New(logging.Options(config.Default().Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return daemon.ExitConfig
	}
	defer log.Sync() //nolint:errcheck
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return acceptAll{} }),
		milter.WithIdleTimeout(filter.IdleTimeout),
		milter.WithCommandTimeout(filter.CommandTimeout),
		milter.WithMaxConnections(filter.MaxConnections),
	)
	err = daemon.RunFailOpen(context.Background(), daemon.FailOpenOptions{
		Sockets: []daemon.Socket{{Name: "milter", Server: srv}},
		Reason:  reason,
		Usable:  func() error { _, _, err := config.LoadDefault(path); return err },
		Log:     log,
	})
	if err != nil {
		log.Error("exiting", zap.Error(err))
		return daemon.ExitConfig
	}
	return 0
}

// acceptAll accepts each connection at once: no signature, no refusal.
type acceptAll struct{ milter.NoOpMilter }

func (acceptAll) Connect(string, string, uint16, string, milter.Modifier) (*milter.Response, error) {
	return milter.RespAccept, nil
}
