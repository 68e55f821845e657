package logging

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestNew(t *testing.T) {
	for _, c := range []Options{{Level: "debug", Format: "console"}, {Level: "warn", Format: "json"}} {
		log, lvl, err := New(c)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if lvl.String() != c.Level {
			t.Errorf("level %s, want %s", lvl, c.Level)
		}
		if err := SetLevel(lvl, "error"); err != nil || log.Core().Enabled(zap.WarnLevel) {
			t.Errorf("SetLevel did not take effect: %v", err)
		}
	}
	if _, _, err := New(Options{Level: "loud", Format: "console"}); err == nil {
		t.Error("bad level accepted")
	}
	if _, _, err := New(Options{Level: "info", Format: "xml"}); err == nil {
		t.Error("bad format accepted")
	}
}

// TestISOTime: the kept text is zap's ISO8601 form of every time given,
// whether the millisecond repeats, moves on or goes back, in any zone.
func TestISOTime(t *testing.T) {
	var c isoTime
	line := func(enc zapcore.TimeEncoder, tm time.Time) string {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = enc
		b, err := zapcore.NewConsoleEncoder(cfg).EncodeEntry(zapcore.Entry{Time: tm, Message: "m"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	base := time.Date(2026, 11, 30, 3, 4, 5, 6_000_000, time.Local)
	for _, tm := range []time.Time{
		base, base.Add(100 * time.Microsecond), base.Add(time.Millisecond), base,
		base.Add(time.Hour), base.UTC(), base.In(time.FixedZone("X", 3600)), base,
	} {
		if got, want := line(c.encode, tm), line(zapcore.ISO8601TimeEncoder, tm); got != want {
			t.Errorf("%v: %q, want %q", tm, got, want)
		}
	}
}

// TestConsoleAsZaps: our console lines are zap's console encoder's, byte
// for byte: named or not, with fields, context (With), a stack, any
// level, with the time or without (the journal).
func TestConsoleAsZaps(t *testing.T) {
	for _, journal := range []bool{false, true} {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		cfg.EncodeDuration = zapcore.StringDurationEncoder
		times := new(isoTime)
		if journal {
			cfg.TimeKey, times = zapcore.OmitKey, nil
		}
		zaps, ours := zapcore.NewConsoleEncoder(cfg), zapcore.Encoder(newConsole(cfg, times))
		at := time.Date(2026, 11, 30, 3, 4, 5, 6_000_000, time.Local)
		for i, c := range []struct {
			e      zapcore.Entry
			with   []zapcore.Field
			fields []zapcore.Field
		}{
			{zapcore.Entry{Time: at, Level: zapcore.InfoLevel, Message: "decision"}, nil, nil},
			{zapcore.Entry{Time: at, Level: zapcore.WarnLevel, LoggerName: "policyd.route", Message: "decision"}, nil,
				[]zapcore.Field{zap.String("recipient", "a@b.mxd"), zap.Bool("cache_hit", true), zap.Duration("took", time.Millisecond)}},
			{zapcore.Entry{Time: at, Level: zapcore.ErrorLevel, LoggerName: "milter", Message: "panic", Stack: "goroutine 1\n\tmain.go:1"},
				[]zapcore.Field{zap.String("session", "s1")}, []zapcore.Field{zap.Int("n", 3)}},
			{zapcore.Entry{Level: zapcore.DebugLevel, LoggerName: "x", Message: "no time"}, nil, []zapcore.Field{zap.String("k", "v\t\"")}},
			// The kinds fastLine writes itself, and what it leaves to zap.
			{zapcore.Entry{Time: at, LoggerName: "policyd", Message: "decision"}, nil,
				[]zapcore.Field{zap.Inline(testLine{"proto", "policy", "recipient", "a@b.mxd"}), zap.Int("n", -3),
					zap.Int32("m", 7), zap.Uint64("u", 9), zap.Bool("dry_run", false)}},
			{zapcore.Entry{Time: at, Message: ""}, nil, []zapcore.Field{zap.String("k", "v")}},
			{zapcore.Entry{Time: at, Message: "empty inline"}, nil, []zapcore.Field{zap.Inline(testLine{})}},
			{zapcore.Entry{Time: at, Message: "x"}, nil, []zapcore.Field{zap.Inline(testLine{"k", "v", "sender", "jörg@b.mxd"})}},
			{zapcore.Entry{Time: at, Message: "x"}, nil, []zapcore.Field{zap.Inline(testLine{"k", "a\\b", "k\"", "v"})}},
			{zapcore.Entry{Time: at, Message: "x"}, []zapcore.Field{zap.String("listener", "policy")}, []zapcore.Field{zap.String("k", "v")}},
			{zapcore.Entry{Time: at, Message: "x"}, nil, []zapcore.Field{zap.String("k", "v"), zap.Error(errors.New("e")), zap.Skip()}},
			{zapcore.Entry{Time: at, Message: "x"}, nil, []zapcore.Field{zap.Inline(testLine{"k", "\x00\x7f\xff"})}},
		} {
			z, o := zaps.Clone(), ours.Clone()
			for _, f := range c.with {
				f.AddTo(z)
				f.AddTo(o)
			}
			want, err1 := z.EncodeEntry(c.e, c.fields)
			got, err2 := o.EncodeEntry(c.e, c.fields)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if got.String() != want.String() {
				t.Errorf("journal %v, entry %d:\n got %q\nwant %q", journal, i, got, want)
			}
		}
	}
}

// testLine is an inline object of string fields, as the decision line is.
type testLine []string

func (l testLine) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for i := 0; i+1 < len(l); i += 2 {
		enc.AddString(l[i], l[i+1])
	}
	return nil
}

// TestConsoleRandomStrings: whatever bytes a client puts in a field, the
// line is zap's.
func TestConsoleRandomStrings(t *testing.T) {
	cfg := zap.NewProductionEncoderConfig()
	zaps, ours := zapcore.NewConsoleEncoder(cfg), newConsole(cfg, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab@.\"\\\t\n\x00\x1f\x7f\x80\xc3\xa9\xe2\x80\xa8 {}:,")
	for i := range 20000 {
		b := make([]byte, rnd.IntN(12))
		for j := range b {
			b[j] = alphabet[rnd.IntN(len(alphabet))]
		}
		e := zapcore.Entry{Message: "decision"}
		fields := []zapcore.Field{zap.Inline(testLine{"recipient", string(b), "route", "relay"}), zap.Bool("cache_hit", i%2 == 0)}
		want, _ := zaps.EncodeEntry(e, fields)
		got, _ := ours.EncodeEntry(e, fields)
		if got.String() != want.String() {
			t.Fatalf("value %q:\n got %q\nwant %q", b, got, want)
		}
	}
}

// TestFastLine: the common lines are written by fastLine, the others are
// left to zap.
func TestFastLine(t *testing.T) {
	e := zapcore.Entry{Message: "decision"}
	for _, c := range []struct {
		fields []zapcore.Field
		fast   bool
	}{
		{[]zapcore.Field{zap.Inline(testLine{"recipient", "a@b.mxd"}), zap.Bool("cache_hit", true), zap.Int("n", 1)}, true},
		{[]zapcore.Field{zap.String("recipient", "jörg@b.mxd")}, false},
		{[]zapcore.Field{zap.Duration("took", time.Second)}, false},
		{[]zapcore.Field{zap.Inline(testLine{})}, false},
		{nil, false},
	} {
		line := bufs.Get()
		if got := fastLine(line, e, c.fields); got != c.fast {
			t.Errorf("fastLine(%v) = %v, want %v", c.fields, got, c.fast)
		}
		line.Free()
	}
}
