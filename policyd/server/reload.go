package server

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/daemon"
	"github.com/mxdetour/mxdetour/internal/logging"
)

// ReloadFrom reads the configuration again (Load) and swaps a generation
// built from it in at once (SIGHUP); on an error the running one stays.
func (s *Server) ReloadFrom(ctx context.Context, path string, level zap.AtomicLevel) error {
	next, _, err := Load(path)
	if err != nil {
		return err
	}
	if err := logging.SetLevel(level, next.Log.Level); err != nil {
		return err
	}
	return s.Reload(ctx, next)
}

// Reload builds the generation of next beside the running one, lets its
// self-check look before it routes, swaps it in for every later request
// with one store, then stops and releases what the old one ran and the
// new one does not reuse. Learned blocks are merged from the state file,
// never replaced. The end of ctx (the daemon stopping) cuts the new
// self-check short.
func (s *Server) Reload(ctx context.Context, next *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.gen.Load()
	if changed := restartOnly(old.cfg, next); len(changed) > 0 {
		s.log.Warn("these settings change only on restart; the running values stay", zap.Strings("keys", changed))
	}
	if next.Learn.Enabled && s.store == nil {
		s.log.Warn("learn.enabled changes only on restart")
	}
	g, err := s.build(next, old)
	if err != nil {
		return err
	}
	s.alerts.Configure(alertOptions(next)) // before the new self-check, which may have news
	if s.store != nil {
		if err := s.store.Reload(); err != nil {
			s.log.Error("reload: state file", zap.Error(err))
		}
	}
	if g.monitor != nil && g.monitor == old.monitor { // still checking: hand it over
		g.monitorStop, g.monitorDone, old.monitorStop = old.monitorStop, old.monitorDone, nil
	}
	if g.monitor != nil && g.monitorStop == nil {
		// A new self-check starts with what it knows, not blank; what it
		// alerts describes the providers of g, which routes by it.
		checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.next.Store(g)
		g.monitor.CheckNow(checkCtx)
		s.next.Store(nil)
		cancel()
	}
	// Not cut short by a stop: the old learner saves its offset, and the
	// new one resumes there.
	haltCtx, cancelHalt := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelHalt()
	s.halt(haltCtx, old)
	s.limiter.Configure(LimitOptions(next, g.geo.source())) // the counters stay
	s.gen.Store(g)
	s.run(g)
	g.closeReplaced(old)
	return nil
}

// describing is the generation an alert describes: the one a reload is
// checking before it routes by it, else the current one.
func (s *Server) describing() *Generation {
	if g := s.next.Load(); g != nil {
		return g
	}
	return s.gen.Load()
}

// restartOnly names the keys that differ between a and b and that only a
// restart applies: sockets, connection limits, the metrics endpoint, the
// log format and where learned state lives.
func restartOnly(a, b *config.Config) []string {
	return daemon.RestartOnly(
		daemon.Setting{Key: "policyd.policy_listen", Was: a.Policyd.PolicyListen, Now: b.Policyd.PolicyListen},
		daemon.Setting{Key: "policyd.socketmap_listen", Was: a.Policyd.SocketmapListen, Now: b.Policyd.SocketmapListen},
		daemon.Setting{Key: "policyd.socket_mode", Was: a.Policyd.SocketMode, Now: b.Policyd.SocketMode},
		daemon.Setting{Key: "policyd.idle_timeout", Was: a.Policyd.IdleTimeout, Now: b.Policyd.IdleTimeout},
		daemon.Setting{Key: "policyd.max_connections", Was: a.Policyd.MaxConnections, Now: b.Policyd.MaxConnections},
		daemon.Setting{Key: "policyd.max_request_size", Was: a.Policyd.MaxRequestSize, Now: b.Policyd.MaxRequestSize},
		daemon.Setting{Key: "metrics.policyd_listen", Was: a.Metrics.PolicydListen, Now: b.Metrics.PolicydListen},
		daemon.Setting{Key: "metrics.pprof", Was: fmt.Sprint(a.Metrics.Pprof), Now: fmt.Sprint(b.Metrics.Pprof)},
		daemon.Setting{Key: "log.format", Was: a.Log.Format, Now: b.Log.Format},
		daemon.Setting{Key: "learn.state_file", Was: a.Learn.StateFile, Now: b.Learn.StateFile},
		daemon.Setting{Key: "fleet", Was: a.Fleet, Now: b.Fleet},
	)
}
