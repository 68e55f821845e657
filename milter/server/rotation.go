package server

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/mxdetour/mxdetour/internal/config"
	"github.com/mxdetour/mxdetour/internal/lookup"
	"github.com/mxdetour/mxdetour/internal/setup"
	"github.com/mxdetour/mxdetour/milter/dkim"
	"github.com/mxdetour/mxdetour/milter/filter"
)

// StartRotation starts the milter's side of key rotation: the key check
// of the doctor, at once and every interval (dkim.RotationCheckInterval;
// tests shorten it), against
// the keys in use (keys is read at each check, so reloads are followed),
// and hands the rotation to f. [milter.dkim] rotation_overlap,
// rotation_state_file and rotation_selectors, and [dns], are read here
// once: they change on restart. stop ends the checks and waits for the
// one under way.
func StartRotation(f *filter.Filter, cfg *config.Config, keys func() *dkim.Table, interval time.Duration, log *zap.Logger) (stop func(), err error) {
	res, err := lookup.New(setup.Lookup(cfg.DNS), log.Named("lookup"))
	if err != nil {
		return nil, err
	}
	r := dkim.NewRotation(cfg.Milter.DKIM.RotationOverlap.Duration, cfg.Milter.DKIM.RotationStateFile, log.Named("rotation")).
		Alternate(cfg.Milter.DKIM.RotationSelectors == "alternate")
	f.Rotate(r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, res, keys, interval)
	}()
	return func() { cancel(); <-done }, nil
}
