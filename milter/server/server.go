// Package server assembles mxdetour-milter's daemon: the filter state
// built from the configuration (keys, country data, the pickup counter),
// swapped whole at each reload, the metrics, key rotation, and the
// fail-open service that stands in while the configuration is broken.
// The configuration is mapped onto the libraries' own options here
// (options.go): milter/filter and milter/dkim know nothing of the file.
package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// Daemon is the running milter: the filter and the state it works with.
type Daemon struct {
	path    string // the -config flag, read again at reload
	version string
	level   zap.AtomicLevel
	log     *zap.Logger
	filter  *filter.Filter
	cur     atomic.Pointer[Built] // what the filter was last given
	// stopRotation ends the rotation's DNS checks (at SIGTERM).
	stopRotation func()
}

// New builds the daemon of cfg: its state (Build), logged with what it
// was built without, and key rotation: a new key signs once its record is
// published (see README "Rotating keys"), following the keys of each
// reload. path is the -config flag, read again at each reload; level is
// the logger's, which a reload sets.
func New(path string, cfg *config.Config, level zap.AtomicLevel, log *zap.Logger, version string) (*Daemon, error) {
	b := Build(cfg, log, nil)
	m := &Daemon{path: path, version: version, level: level, log: log, filter: filter.New(b.st, log.Named("milter"))}
	m.cur.Store(b)
	m.report(b)
	stop, err := StartRotation(m.filter, cfg, func() *dkim.Table { return m.cur.Load().st.Keys }, dkim.RotationCheckInterval, log)
	if err != nil {
		b.Close()
		return nil, err
	}
	m.stopRotation = stop
	return m, nil
}

// Serve hands the milter to the runner, which serves until SIGTERM and
// reloads on SIGHUP.
func (m *Daemon) Serve() error {
	b := m.cur.Load()
	cfg := b.cfg
	srv := milter.NewServer(m.filter.ServerOptions()...)
	ms, err := serveMetrics(cfg.Metrics.MilterListen, cfg.Metrics.Pprof, m.filter, srv.MilterCount, m.cur.Load, m.version, m.log)
	if err != nil {
		return err
	}
	mode, _ := strconv.ParseUint(cfg.Milter.SocketMode, 8, 32) // validated by config
	m.log.Info("started", zap.String("version", m.version), zap.Int("dkim_keys", b.st.Keys.Len()),
		zap.Int("problems", len(b.Problems())), zap.Bool("country_block", b.st.Geo.Active()),
		zap.Bool("counting_local_mail", b.st.Pickup != nil))
	return daemon.Run(context.Background(), daemon.Options{
		Sockets: []daemon.Socket{{Name: "milter", Addr: cfg.Milter.Listen, Mode: os.FileMode(mode),
			Server: srv}},
		Reload: func(context.Context) error { return m.reload() },
		Health: m.health,
		Stop:   func(context.Context) { ms.Close(); m.stopRotation() },
		Grace:  30 * time.Second,
		Log:    m.log,
	})
}

// reload builds the configuration, keys and country data on the side and
// swaps them in whole (SIGHUP). A file that does not parse leaves
// everything running as it was (the error is returned); bad keys and a
// country source that does not open follow newState's keep-what-works
// policy, and the rest of the new file applies. The country source
// replaced is closed once no lookup uses it.
func (m *Daemon) reload() error {
	next, _, err := config.LoadDefault(m.path)
	if err != nil {
		return err
	}
	if err := logging.SetLevel(m.level, next.Log.Level); err != nil {
		return err
	}
	old := m.cur.Load()
	b := Build(next, m.log, old)
	if changed := restartOnly(old.cfg, next); len(changed) > 0 {
		m.log.Warn("these settings change only on restart; still running with the old values", zap.Strings("changed", changed))
	}
	m.filter.Swap(b.st)
	m.cur.Store(b)
	old.Close()
	m.report(b)
	m.log.Info("new keys and country data in use", zap.Int("dkim_keys", b.st.Keys.Len()),
		zap.Int("problems", len(b.Problems())), zap.Bool("country_block", b.st.Geo.Active()))
	return nil
}

// restartOnly names the settings that differ between a and b and that a
// reload cannot apply: the listeners (possibly passed by systemd) and the
// logger's output format.
func restartOnly(a, b *config.Config) []string {
	return daemon.RestartOnly(
		daemon.Setting{Key: "milter.listen", Was: a.Milter.Listen, Now: b.Milter.Listen},
		daemon.Setting{Key: "milter.socket_mode", Was: a.Milter.SocketMode, Now: b.Milter.SocketMode},
		daemon.Setting{Key: "metrics.milter_listen", Was: a.Metrics.MilterListen, Now: b.Metrics.MilterListen},
		daemon.Setting{Key: "metrics.pprof", Was: fmt.Sprint(a.Metrics.Pprof), Now: fmt.Sprint(b.Metrics.Pprof)},
		daemon.Setting{Key: "log.format", Was: a.Log.Format, Now: b.Log.Format},
	)
}

// health is the watchdog's probe beside the runner's accept-loop check.
// The filter's state is immutable and swapped whole, with no lock to
// deadlock on, so a loaded state is all there is to check here; a milter
// session stuck in go-milter is not seen by it.
func (m *Daemon) health(context.Context) error {
	if m.cur.Load() == nil {
		return errors.New("no filter state loaded")
	}
	return nil
}
