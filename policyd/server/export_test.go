package server

import (
	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/alert"
	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/policyd/respond"
)

// What the tests of package server_test reach of a server from Open,
// which starts nothing.

// UseAlerter makes a send the server's alerts.
func (s *Server) UseAlerter(a *alert.Alerter) { s.alerts = a }

// UseResponders gives the server its responders, as Start does.
func (s *Server) UseResponders(log *zap.Logger) {
	s.resp = respond.New(s.answers, log)
	s.probe = respond.New(s.answers, zap.NewNop())
}

// ServeMetrics starts the metrics endpoint of cfg; CloseMetrics ends it.
func (s *Server) ServeMetrics(cfg *config.Config) error { return s.serveMetrics(cfg) }

func (s *Server) CloseMetrics() { s.metrics.Close() }
