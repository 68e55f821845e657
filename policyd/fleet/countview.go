package fleet

import (
	"context"
	"strconv"
	"time"

	"github.com/mxdetour/mxdetour/policyd/limits"
)

// CountView reads the fleet's limit counters without counting and without
// touching this host's mark (`holds counts`): a limits.Counter over Redis.
// The first Redis error is kept (Err) and every later count is 0.
type CountView struct {
	c   *Conn
	err error
}

// NewCountView reads conn's Redis; closing conn is the caller's.
func NewCountView(conn *Conn) *CountView { return &CountView{c: conn} }

// Err is the first error a count met.
func (v *CountView) Err() error { return v.err }

// Count implements limits.Counter: the slots takeScript would sum at now
// (those from head-Slots to head, kept under the window's slot width).
func (v *CountView) Count(key string, w time.Duration, now time.Time) int {
	if v.err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vals, err := v.c.client.HGetAll(ctx, windowKey(key)).Result()
	if err != nil {
		v.err = err
		return 0
	}
	width := slotWidth(w)
	if vals["w"] != strconv.FormatInt(width, 10) {
		return 0
	}
	head := now.UnixNano() / width
	sum := 0
	for k, s := range vals {
		idx, err1 := strconv.ParseInt(k, 10, 64)
		n, err2 := strconv.Atoi(s)
		if err1 == nil && err2 == nil && idx >= head-limits.Slots && idx <= head {
			sum += n
		}
	}
	return sum
}
