package filter

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/d--j/go-milter"
	"go.uber.org/zap/zaptest"
)

// TestSwapClosesCountryData: reloads that swap the state and close the
// old country database while clients from a blocked country keep
// sending never let one through (a lookup in a closed database would
// fail open) nor touch an unmapped file (a crash, or a race report).
func TestSwapClosesCountryData(t *testing.T) {
	f := New(state(t, nil), zaptest.NewLogger(t))
	addr := serve(t, f)
	var sent, rejected atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			macros := milter.NewMacroBag()
			macros.Set(milter.MacroDaemonAddr, "127.0.0.1")
			s, err := milter.NewClient("tcp", addr).Session(macros)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			if _, err := s.Conn("client.example", milter.FamilyInet, 25, "203.0.113.9"); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Helo("client.example"); err != nil {
				t.Error(err)
				return
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := s.Mail("<sender@example.org>", "")
				if err != nil {
					t.Error(err)
					return
				}
				sent.Add(1)
				if a.Type == milter.ActionRejectWithCode {
					rejected.Add(1)
				}
				if err := s.Abort(nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 40 {
		old := f.st.Load()
		f.Swap(state(t, nil))
		old.Geo.Close()
	}
	close(stop)
	wg.Wait()
	if sent.Load() == 0 || rejected.Load() != sent.Load() {
		t.Errorf("%d of %d messages from a blocked country rejected across reloads", rejected.Load(), sent.Load())
	}
	t.Logf("%d messages during 40 reloads", sent.Load())
}
