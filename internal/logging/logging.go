// Package logging builds the one zap logger each daemon hands down by name,
// from the [log] section, with a level that a reload can change.
package logging

import (
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mxdetour/mxdetour/internal/config"
)

// New builds a logger writing to stderr (journald keeps it) in console or
// JSON form, at the configured level.
func New(c config.Log) (*zap.Logger, zap.AtomicLevel, error) {
	level := zap.NewAtomicLevel()
	if err := SetLevel(level, c.Level); err != nil {
		return nil, level, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder
	switch c.Format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console", "":
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, level, fmt.Errorf("log format %q is not console or json", c.Format)
	}
	// One line per decision at tens of thousands of decisions a second:
	// write in batches rather than one system call a line. Warnings,
	// errors and the exit (Sync) flush at once; other lines are at most
	// 200 ms late.
	out := &zapcore.BufferedWriteSyncer{WS: zapcore.Lock(os.Stderr), Size: 256 << 10, FlushInterval: 200 * time.Millisecond}
	core := zapcore.NewCore(encoder, out, level)
	return zap.New(flushOnError{core, out}, zap.ErrorOutput(zapcore.Lock(os.Stderr))), level, nil
}

// flushOnError writes warnings and errors out at once, so that they are
// never held back behind the buffer.
type flushOnError struct {
	zapcore.Core
	out *zapcore.BufferedWriteSyncer
}

func (f flushOnError) With(fields []zapcore.Field) zapcore.Core {
	return flushOnError{f.Core.With(fields), f.out}
}

func (f flushOnError) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f flushOnError) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := f.Core.Write(e, fields)
	if e.Level >= zapcore.WarnLevel {
		_ = f.out.Sync()
	}
	return err
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
