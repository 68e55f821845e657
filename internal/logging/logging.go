// Package logging builds the one zap logger each daemon hands down by name,
// from the [log] section, with a level that a reload can change.
package logging

import (
	"fmt"

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
	zc := zap.Config{
		Level:             level,
		Encoding:          "console",
		EncoderConfig:     enc,
		OutputPaths:       []string{"stderr"},
		ErrorOutputPaths:  []string{"stderr"},
		DisableCaller:     true,
		DisableStacktrace: true,
	}
	switch c.Format {
	case "json":
		zc.Encoding = "json"
	case "console", "":
	default:
		return nil, level, fmt.Errorf("log format %q is not console or json", c.Format)
	}
	log, err := zc.Build()
	return log, level, err
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
