package server

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// ConfigError marks errors that mean "fix the configuration" (exit 78).
type ConfigError struct{ error }

func (e ConfigError) Unwrap() error { return e.error }

// Load reads the configuration and checks everything a start needs of it
// beyond the file itself (CheckCanStart): -check-config, a start and a
// reload all call it, so that what the check accepts, a start accepts.
func Load(path string) (*config.Config, string, error) {
	cfg, used, err := config.LoadDefault(path)
	if err == nil {
		err = CheckCanStart(cfg)
	}
	return cfg, used, err
}

// CheckCanStart opens and compiles what the file names and the daemon
// cannot start without, which config.Validate cannot check: the learn
// patterns, [fleet]'s URL and password file, and the country data of the
// compromise signal. A start refuses exactly what this refuses (Start's
// own failures are these, as ConfigError).
func CheckCanStart(cfg *config.Config) error {
	if _, err := learn.NewClassifier(cfg.Learn.Patterns, cfg.Learn.IgnorePatterns); err != nil {
		return fmt.Errorf("[learn]: %w", err)
	}
	if cfg.Compromise.Enabled {
		r, err := lookup.New(setup.Lookup(cfg.DNS), zap.NewNop()) // queries nothing until asked
		if err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		g, err := openLimitsGeo(cfg, r, nil)
		if err != nil {
			return fmt.Errorf("[compromise] (its country data is [milter.geo]'s): %w", err)
		}
		g.close()
	}
	return checkFleet(cfg)
}

// CheckStateFile checks where learned state is kept. -check-config
// fails on it; the daemon only says so loudly and runs, keeping what it
// learns in memory: routing must not stop because a directory is missing
// (the embedded defaults name /var/lib/mxdetour, which `make run` on a
// developer's machine lacks).
func CheckStateFile(cfg *config.Config) error {
	if !cfg.Learn.Enabled {
		return nil
	}
	return learn.CheckStateFile(cfg.Learn.StateFile)
}
