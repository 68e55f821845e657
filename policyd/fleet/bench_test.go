package fleet

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/block"
	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/learn"
	"github.com/mxdetour/mxdetour/policyd/route"
)

// BenchmarkDecideCached is route's benchmark of the same name (a cached
// decision) with learned blocks in a store: "store" alone, and "fleet"
// with that store in a fleet, while another host shares a new block every
// 10 ms. The decision reads only the store: the two must not differ
// beyond noise.
func BenchmarkDecideCached(b *testing.B) {
	srv := dnstest.New(b, dnstest.Zone{
		"gmail.mxd": {TTL: 3600, MX: []lookup.MX{{Host: "gmail-smtp-in.l.google.com", Pref: 5}}},
	})
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Transports.Relay = "relay:[mx03.example.net]:587"
	for _, withFleet := range []bool{false, true} {
		name := map[bool]string{false: "store", true: "fleet"}[withFleet]
		b.Run(name, func(b *testing.B) {
			s, err := learn.OpenStore(filepath.Join(b.TempDir(), "state.json"), zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			for i := range 200 {
				d := fmt.Sprintf("d%d.mxd", i)
				s.Merge(block.Block{Domain: d, MXHost: "mx." + d, Kind: "k", Host: "mx02", Learned: now, Expires: now.Add(time.Hour)})
			}
			if withFleet {
				r := fleettest.Start(b)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				for _, h := range []string{"mx01", "mx02"} {
					hs := s
					if h == "mx02" {
						hs, _ = learn.OpenStore(filepath.Join(b.TempDir(), "other.json"), zap.NewNop())
					}
					f, err := New(Options{URL: r.URL(), Name: h}, hs, zap.NewNop())
					if err != nil {
						b.Fatal(err)
					}
					go f.Run(ctx)
					if h == "mx02" {
						go churn(ctx, f)
					}
				}
			}
			res, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			e := route.New(setup.Route(cfg), res, nil, s)
			bctx := context.Background()
			e.Decide(bctx, "warm@gmail.mxd")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if d := e.Decide(bctx, "someone@gmail.mxd"); d.Route != route.Relay {
					b.Fatal(d.Route)
				}
			}
		})
	}
}

// churn has f's host share a new block every 100 ms until ctx ends.
func churn(ctx context.Context, f *Fleet) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		f.learned(block.Block{Domain: fmt.Sprintf("churn%d.mxd", i), MXHost: "mx.churn.mxd", Kind: "k", Learned: now, Expires: now.Add(time.Hour)})
	}
}
