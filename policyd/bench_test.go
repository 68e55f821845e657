package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup/dnstest"
	"github.com/mxdetour/mxdetour/policyd/respond"
	"github.com/mxdetour/mxdetour/policyd/socketmap"
)

// BenchmarkSocketmapCached measures the whole daemon path for cached
// decisions: socket, codec, decision, log line (to /dev/null), answer.
func BenchmarkSocketmapCached(b *testing.B) {
	srv := dnstest.New(b, zone())
	cfg := config.Default()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.Transports.Relay = "relay:[mx03.example.net]:587"
	cfg.Learn.Enabled = false
	cfg.Policyd.PolicyListen = ""
	cfg.Policyd.SocketmapListen = "127.0.0.1:0"
	devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(devnull), zap.InfoLevel))
	d, err := parts(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	d.resp = respond.New(d.runtime().engine, cfg.Policyd.DecisionTimeout.Duration, log)
	s := socketmap.NewServer(d.resp, socketmap.Options{}, log)
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
