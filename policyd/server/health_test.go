package server_test

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/policyd/server"
)

func probeDaemon(t testing.TB) *server.Server {
	cfg := config.Default()
	cfg.DNS.Servers = []string{"127.0.0.1:9"} // never asked: the probe needs no DNS
	cfg.Learn.Enabled = false
	d, err := server.Open(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	d.UseResponders(zap.NewNop())
	return d
}

// TestHealthProbe: the watchdog's probe passes on a daemon with no DNS at
// all (a dead resolver must not get policyd restarted), and adds nothing
// to the decision counters that metrics export.
func TestHealthProbe(t *testing.T) {
	d := probeDaemon(t)
	if err := d.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := d.Responder().Stats().Decisions.Load(); n != 0 {
		t.Errorf("the probe was counted as %d decisions", n)
	}
}

// BenchmarkHealthProbe: what one watchdog probe costs; the units allow it
// 5 seconds.
func BenchmarkHealthProbe(b *testing.B) {
	d := probeDaemon(b)
	ctx := context.Background()
	for b.Loop() {
		if err := d.Health(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
