package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/server"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// failOpen serves Postfix the fail-open answers (socketmap NOTFOUND,
// policy DUNNO) on systemd's sockets while the configuration is unusable,
// and starts again in full service at the first reload that finds it
// usable (daemon.RunFailOpen). Run by hand, a bad file still exits 78.
func failOpen(path string, reason error, stderr io.Writer) int {
	log, _, err := logging.New(logging.Options(config.Default().Log))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	defer log.Sync() //nolint:errcheck
	o := policy.Options{IdleTimeout: 5 * time.Minute, MaxRequestSize: 65536, MaxConnections: 1000}
	err = daemon.RunFailOpen(context.Background(), daemon.FailOpenOptions{
		Sockets: []daemon.Socket{
			{Name: "policy", Server: policy.NewServer(dunno{}, o, log.Named("policy"))},
			{Name: "socketmap", Server: socketmap.NewServer(notFound{}, o, log.Named("socketmap"))},
		},
		Reason: reason,
		Usable: func() error { _, _, err := server.Load(path); return err },
		Log:    log,
	})
	if err != nil {
		log.Error("exiting", zap.Error(err))
		return exitConfig
	}
	return 0
}

// dunno and notFound are the fail-open answers: Postfix goes its default way.
type dunno struct{}

func (dunno) Policy(context.Context, *policy.Request) string { return "DUNNO" }

type notFound struct{}

func (notFound) Lookup(context.Context, string, string) socketmap.Reply { return socketmap.NotFound() }
