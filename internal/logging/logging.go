// Package logging builds the one zap logger each daemon hands down by name,
// from the [log] section, with a level that a reload can change.
package logging

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Options are a logger's: Level is debug, info, warn or error; Format
// console or json. ([log] of the configuration converts to it.)
type Options struct {
	Level  string
	Format string
}

// New builds a logger writing to stderr in console or JSON form, at the
// configured level. When stderr is the journal (systemd's JOURNAL_STREAM
// names it), every line starts with its syslog priority ("<4>" for a
// warning, sd-daemon(3)), so `journalctl -p warning` and the unit's
// SyslogFacility= see it, and the time is left to journald; the console
// form is then the journal's (syslog.go): plain words on one line, as
// Postfix's own lines in mail.log, with nothing for rsyslog to escape.
func New(c Options) (*zap.Logger, zap.AtomicLevel, error) {
	return newFor(c, os.Stderr, os.Getenv("JOURNAL_STREAM"))
}

// newFor is New writing to w, with stream the value of JOURNAL_STREAM.
func newFor(c Options, w *os.File, stream string) (*zap.Logger, zap.AtomicLevel, error) {
	return newLogger(c, w, toJournal(stream, w))
}

// NewFile is New writing to w (never the journal), for benchmarks that
// must pay what the daemon pays per line.
func NewFile(c Options, w *os.File) (*zap.Logger, zap.AtomicLevel, error) {
	return newLogger(c, w, false)
}

func newLogger(c Options, w *os.File, journal bool) (*zap.Logger, zap.AtomicLevel, error) {
	level := zap.NewAtomicLevel()
	if err := SetLevel(level, c.Level); err != nil {
		return nil, level, err
	}
	enc := zap.NewProductionEncoderConfig()
	times := new(isoTime)
	enc.EncodeTime = times.encode
	enc.EncodeDuration = zapcore.StringDurationEncoder
	if journal {
		enc.TimeKey = zapcore.OmitKey // journald stamps each line
	}
	var encoder zapcore.Encoder
	switch c.Format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
		if journal {
			encoder = priorityEncoder{encoder}
		}
	case "console", "":
		if journal {
			encoder = newSyslog()
		} else {
			encoder = newConsole(enc, times)
		}
	default:
		return nil, level, fmt.Errorf("log format %q is not console or json", c.Format)
	}
	// One line per decision at tens of thousands of decisions a second:
	// write in batches rather than one system call a line. Warnings,
	// errors and the exit (Sync) flush at once; other lines are at most
	// 200 ms late.
	out := &zapcore.BufferedWriteSyncer{WS: zapcore.Lock(w), Size: 256 << 10, FlushInterval: 200 * time.Millisecond}
	core := zapcore.NewCore(encoder, out, level)
	return zap.New(&flushOnError{core, out}, zap.ErrorOutput(zapcore.Lock(w))), level, nil
}

// flushOnError writes warnings and errors out at once, so that they are
// never held back behind the buffer.
type flushOnError struct {
	zapcore.Core
	out *zapcore.BufferedWriteSyncer
}

func (f *flushOnError) With(fields []zapcore.Field) zapcore.Core {
	return &flushOnError{f.Core.With(fields), f.out}
}

// Check adds f itself, a pointer: a value would be copied to the heap on
// every line.
func (f *flushOnError) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f *flushOnError) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := f.Core.Write(e, fields)
	if e.Level >= zapcore.WarnLevel {
		_ = f.out.Sync()
	}
	return err
}

// isoTime is zap's ISO8601TimeEncoder that keeps the text of the last
// millisecond it wrote: at thousands of decision lines a second most lines
// share it, and formatting a time is a tenth of a line's cost.
type isoTime struct{ last atomic.Pointer[stamp] }

type stamp struct {
	ms   int64
	text string
}

func (c *isoTime) encode(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(c.text(t))
}

func (c *isoTime) text(t time.Time) string {
	ms := t.UnixMilli()
	s := c.last.Load()
	if s == nil || s.ms != ms || t.Location() != time.Local {
		s = &stamp{ms, t.Format("2006-01-02T15:04:05.000Z0700")}
		if t.Location() == time.Local {
			c.last.Store(s)
		}
	}
	return s.text
}

// console is zap's console encoder with the head of the line (time,
// level, logger name) written straight into it: zap's passes each through
// fmt.Fprint as an interface, three allocations a line. The rest (message,
// fields, stack) is zap's own. The lines are zap's byte for byte, for the
// entries our loggers make: they add no caller, and every line has a
// message.
type console struct {
	zapcore.Encoder            // zap's, without time, level and name
	times           *isoTime   // nil: no time (the journal has it)
	plain           *noContext // whether fastLine may write the rest
}

func newConsole(cfg zapcore.EncoderConfig, times *isoTime) console {
	cfg.TimeKey, cfg.LevelKey, cfg.NameKey = zapcore.OmitKey, zapcore.OmitKey, zapcore.OmitKey
	return console{zapcore.NewConsoleEncoder(cfg), times, new(noContext)}
}

func (c console) Clone() zapcore.Encoder { return console{c.Encoder.Clone(), c.times, new(noContext)} }

func (c console) EncodeEntry(e zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line := bufs.Get()
	if c.times != nil && !e.Time.IsZero() {
		line.AppendString(c.times.text(e.Time))
		line.AppendByte('\t')
	}
	line.AppendString(e.Level.String())
	line.AppendByte('\t')
	if e.LoggerName != "" {
		line.AppendString(e.LoggerName)
		line.AppendByte('\t')
	}
	head := line.Len()
	if c.plain.of(c.Encoder) && fastLine(line, e, fields) {
		return line, nil
	}
	rest, err := c.Encoder.EncodeEntry(e, fields)
	if err != nil {
		line.Free()
		return nil, err
	}
	if line.Len() != head { // fastLine gave up halfway: start again after the head
		b := line.Bytes()[:head]
		line.Reset()
		_, _ = line.Write(b)
	}
	// zap separates the fields from an empty message too, when a head
	// comes before it.
	if b := rest.Bytes(); e.Message == "" && len(b) > 0 && b[0] == '{' {
		line.AppendByte('\t')
	}
	_, _ = line.Write(rest.Bytes())
	rest.Free()
	return line, nil
}

// SetLevel changes the level of a running logger.
func SetLevel(l zap.AtomicLevel, level string) error {
	lv, err := zapcore.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("log level %q: %w", level, err)
	}
	l.SetLevel(lv)
	return nil
}

// toJournal reports whether f is the stream JOURNAL_STREAM ("DEVICE:INODE")
// names: systemd sets it for a unit whose output goes to the journal, and
// children inherit it, so the descriptor must be checked, not just the
// variable (systemd.exec(5)).
func toJournal(stream string, f *os.File) bool {
	dev, ino, ok := strings.Cut(stream, ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return strconv.FormatUint(uint64(st.Dev), 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// priorityEncoder starts each JSON line with the syslog priority of its
// level, the prefix journald reads from a stream (sd-daemon(3)).
type priorityEncoder struct{ zapcore.Encoder }

var bufs = buffer.NewPool()

func (p priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{p.Encoder.Clone()} }

func (p priorityEncoder) EncodeEntry(e zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line, err := p.Encoder.EncodeEntry(e, fields)
	if err != nil {
		return nil, err
	}
	out := bufs.Get()
	out.AppendString(priority(e.Level))
	_, _ = out.Write(line.Bytes())
	line.Free()
	return out, nil
}
