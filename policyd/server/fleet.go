package server

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/policyd/fleet"
	"github.com/mxdetour/mxdetour/policyd/learn"
)

// fleetOptions maps [fleet]; it reads the password file.
func fleetOptions(cfg *config.Config) (fleet.Options, error) {
	f := cfg.Fleet
	o := fleet.Options{URL: f.RedisURL, Name: f.Name, OwnOnly: f.Share == "own",
		Own: slices.Concat(cfg.Self.IPv4, cfg.Self.IPv6)}
	if f.PasswordFile != "" {
		data, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("fleet.password_file: %w", err)
		}
		o.Password = strings.TrimSpace(string(data))
	}
	return o, nil
}

// checkFleet is CheckCanStart's part for [fleet]: the URL as go-redis
// reads it and the password file.
func checkFleet(cfg *config.Config) error {
	if cfg.Fleet.RedisURL == "" {
		return nil
	}
	o, err := fleetOptions(cfg)
	if err != nil {
		return err
	}
	c, err := fleet.Open(o.URL, o.Password, o.Name)
	if err != nil {
		return fmt.Errorf("fleet.%w", err)
	}
	return c.Close()
}

// startFleet returns the fleet that shares the blocks of store with the
// other hosts once it runs, when [fleet] redis_url is set; nil otherwise.
func startFleet(cfg *config.Config, store *learn.Store, log *zap.Logger) (*fleet.Fleet, error) {
	if cfg.Fleet.RedisURL == "" || store == nil {
		return nil, nil
	}
	o, err := fleetOptions(cfg)
	if err != nil {
		return nil, ConfigError{err}
	}
	f, err := fleet.New(o, store, log)
	if err != nil {
		return nil, ConfigError{fmt.Errorf("fleet.%w", err)}
	}
	return f, nil
}

// OpenFleet connects a command to the fleet, and names this host in it;
// nil without a fleet.
func OpenFleet(cfg *config.Config) (*fleet.Conn, string, error) {
	if cfg.Fleet.RedisURL == "" {
		return nil, "", nil
	}
	o, err := fleetOptions(cfg)
	if err != nil {
		return nil, "", err
	}
	if o.Name == "" {
		if o.Name, err = os.Hostname(); err != nil {
			return nil, "", err
		}
	}
	c, err := fleet.Open(o.URL, o.Password, o.Name)
	if err != nil {
		return nil, "", fmt.Errorf("fleet.%w", err)
	}
	return c, o.Name, nil
}
