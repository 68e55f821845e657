package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/fleet/fleettest"
	"github.com/mxdetour/mxdetour/policyd/limits"
	"github.com/mxdetour/mxdetour/policyd/policy"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/server"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// BenchmarkSocketmapCached measures the whole daemon path for cached
// decisions: socket, codec, decision, log line (to /dev/null), answer.
func BenchmarkSocketmapCached(b *testing.B) {
	resp, log := benchResponder(b, zone(), nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	s := socketmap.NewServer(resp, socketmap.Options{}, log)
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		req := "transport someone@gmail.mxd"
		for pb.Next() {
			fmt.Fprintf(c, "%d:%s,", len(req), req)
			if _, err := socketmap.ReadNetstring(r, 1000, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPolicy measures the policy delegation path for cached
// decisions (socket, codec, decision, log line, answer), bare and with two
// outbound limits that count every request (a trusted client keyed by
// sender, and a per-client limit for Google-hosted recipients), never
// reached; and the two limits counted in Redis, as a fleet counts them.
// test/bench-policyd.sh compares the first two with the do-nothing floor.
func BenchmarkPolicy(b *testing.B) {
	for _, name := range []string{"bare", "two-limits", "two-limits-redis"} {
		b.Run(name, func(b *testing.B) {
			log := benchLogger(b)
			var lim *limits.Limiter
			if name != "bare" {
				var store limits.Store = limits.NewMemory()
				if name == "two-limits-redis" {
					// A fleet's counters: every Take is a script on a
					// real redis-server.
					r := fleettest.Start(b)
					conn, err := fleet.Open(r.URL(), "", "bench")
					if err != nil {
						b.Fatal(err)
					}
					defer conn.Close()
					c := fleet.NewCounters(conn, limits.NewMemory(), log)
					defer func() {
						if c.Alone() {
							b.Error("the counters fell back to this host: Redis failed")
						}
						if n := r.Do("DBSIZE"); n == "0" {
							b.Error("nothing counted in Redis")
						}
					}()
					store = c
				}
				lim = twoLimits(store, log)
			}
			resp, _ := benchResponder(b, zone(), lim)
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			s := policy.NewServer(resp, policy.Options{}, log)
			go s.Serve(ln)
			defer s.Shutdown(context.Background())
			b.ReportAllocs()
			b.SetParallelism(4)
			var conn atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				r := bufio.NewReader(c)
				// Two recipients in turn: the limits count a recipient
				// asked twice in a row (two checks wired) once.
				id := conn.Add(1)
				var reqs [2]string
				for i := range reqs {
					reqs[i] = fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nqueue_id=\n"+
						"sender=s@sender.bench\nrecipient=someone%d@gmail.mxd\nclient_address=192.0.2.1\ninstance=%d.1\n\n", i, id)
				}
				n := 0
				for pb.Next() {
					n++
					io.WriteString(c, reqs[n&1])
					for {
						l, err := r.ReadSlice('\n')
						if err != nil {
							b.Error(err)
							return
						}
						if len(l) == 1 {
							break
						}
					}
				}
			})
			if lim != nil && len(lim.Held()) != 0 {
				b.Error("a limit was reached")
			}
		})
	}
}

// benchResponder is a responder deciding as the daemon does with z's DNS
// server, relay configured, learning off, limiting with lim (nil: none),
// and logging to /dev/null.
func benchResponder(b *testing.B, z dnstest.Zone, lim *limits.Limiter) (*respond.Responder, *zap.Logger) {
	srv := dnstest.New(b, z)
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Transports.Relay = "relay:[mx03.example.net]:587"
	cfg.Learn.Enabled = false
	log := benchLogger(b)
	s, err := server.Open(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	setup := respond.Setup{Engine: s.Current().Engine(), Timeout: cfg.Policyd.DecisionTimeout.Duration, Limits: lim}
	return respond.New(respond.Fixed(setup), log), log
}

// twoLimits are the benchmarks' outbound limits, never reached: per login
// (a trusted client without one is keyed by sender), and per client for
// recipients at Google.
func twoLimits(store limits.Store, log *zap.Logger) *limits.Limiter {
	return limits.New(limits.Options{
		Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Limits: []limits.Limit{
			{Key: limits.KeySASL, Max: 1 << 30, Window: time.Hour, Action: limits.Hold},
			{Key: limits.KeyClient, Max: 1 << 30, Window: time.Hour, Provider: "google", Action: limits.Hold},
		}}, store, nil, log)
}

// benchLogger is the daemon's own logger (console lines, buffered) writing
// to /dev/null.
func benchLogger(b *testing.B) *zap.Logger {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	log, _, err := logging.NewFile(logging.Options{Level: "info", Format: "console"}, devnull)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = log.Sync(); devnull.Close() })
	return log.Named("policyd")
}

// BenchmarkHandler measures our own work per policy request, without the
// socket: reading a request from a buffer, the decision, the two limits
// of BenchmarkPolicy and the log line, over the 100 domains of
// test/fakedns with a new recipient every time, as test/loadpolicy sends.
// In the daemon the same work costs several times more (cold caches
// between the system calls); this is the part of it we control.
func BenchmarkHandler(b *testing.B) {
	log := benchLogger(b)
	lim := twoLimits(limits.NewMemory(), log)
	resp, _ := benchResponder(b, dnstest.BenchZone(100), lim)
	var conn atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := int(conn.Add(1))
		tail := "\nclient_address=192.0.2.1\ninstance=" + strconv.Itoa(id) + ".1\n\n"
		var raw []byte
		var src bytes.Reader
		br := bufio.NewReader(&src)
		var req policy.Request
		for n := 0; pb.Next(); n++ {
			raw = append(raw[:0], "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nqueue_id=\nsender=s@sender.bench\nrecipient=user"...)
			raw = strconv.AppendInt(raw, int64(n), 10)
			raw = append(raw, "@d"...)
			raw = strconv.AppendInt(raw, int64((id*7919+n)%100), 10)
			raw = append(raw, ".bench"...)
			raw = append(raw, tail...)
			src.Reset(raw)
			br.Reset(&src)
			if err := policy.ReadRequest(br, &req, 8192); err != nil {
				b.Fatal(err)
			}
			if a := resp.Policy(context.Background(), &req); a == "" {
				b.Fatal("no answer")
			}
		}
	})
	if len(lim.Held()) != 0 {
		b.Error("a limit was reached")
	}
}
