package logging

import (
	"os"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// BenchmarkDecisionLine measures one decision line as policyd writes it
// (eleven fields, inline), through the daemon's own logger, to /dev/null:
// on a terminal (console, json) and to the journal (journal: the console
// format as systemd runs it; journal-json).
func BenchmarkDecisionLine(b *testing.B) {
	for _, c := range []struct {
		name, format string
		journal      bool
	}{{"console", "console", false}, {"json", "json", false}, {"journal", "console", true}, {"journal-json", "json", true}} {
		b.Run(c.name, func(b *testing.B) {
			devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			log, _, err := newLogger(Options{Level: "info", Format: c.format}, devnull, c.journal)
			if err != nil {
				b.Fatal(err)
			}
			log = log.Named("policyd")
			defer log.Sync()
			line := decisionLike{}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ce := log.Check(zap.InfoLevel, "decision"); ce != nil {
						ce.Write(zap.Inline(line))
					}
				}
			})
		})
	}
}

// decisionLike has the fields of policyd's decision line.
type decisionLike struct{}

func (decisionLike) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("proto", "policy")
	enc.AddString("queue_id", "")
	enc.AddString("recipient", "someone@customer.example")
	enc.AddString("sender", "alice@example.net")
	enc.AddString("client", "192.0.2.1")
	enc.AddString("route", "relay")
	enc.AddString("answer", "FILTER relay:[mx03.example.net]:587")
	enc.AddString("provider", "google")
	enc.AddString("reason", "listed")
	enc.AddBool("cache_hit", true)
	enc.AddBool("dry_run", false)
	return nil
}
