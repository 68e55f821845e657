package lookup

import (
	"fmt"
	"runtime"
	"time"
)

// SetClock replaces the client's clock (tests only).
func SetClock(c *Client, now func() time.Time) { c.now = now }

// Insert puts a synthetic MX answer for the i-th name into the cache, the
// way a real answer is stored (memory benchmark).
func Insert(c *Client, i int) {
	name := fmt.Sprintf("domain-%d.mxd.", i)
	c.cache.Add(cacheKey{15, name}, &entry{res: Result{Status: Answer, MX: []MX{{Host: "mx." + name, Pref: 10}}}, expires: c.now().Add(time.Hour)})
}

// HeapInUse is the live heap after a collection.
func HeapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
