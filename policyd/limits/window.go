package limits

import "time"

// Slots is how many sub-intervals a sliding window is cut into: a window
// of an hour slides by the minute. Memory per key is fixed (Slots+1
// counters), whatever the traffic, which a log of every recipient's time
// would not be.
const Slots = 60

// window counts events in a sliding window of Slots sub-intervals of
// width ns each. An event at time t lands in slot t/width; at time now
// the window holds the slots from now/width-Slots to now/width, so an
// event is counted for at least Slots*width (the window) and less than
// (Slots+1)*width: it leaves the window between w and w+w/Slots after it
// happened — never early, at most one slot late. Not safe for concurrent
// use: the store locks.
type window struct {
	width int64 // slot width, ns
	head  int64 // index of the newest slot
	total int64
	c     [Slots + 1]int32
}

// slotWidth is w/Slots rounded up, so that Slots slots cover at least w.
func slotWidth(w time.Duration) int64 {
	return max(1, (int64(w)+Slots-1)/Slots)
}

func newWindow(w time.Duration, now time.Time) *window {
	width := slotWidth(w)
	return &window{width: width, head: now.UnixNano() / width}
}

// advance moves the newest slot to now's, emptying the slots that fell
// out of the window. A clock that went back leaves the window as it is.
func (win *window) advance(now time.Time) {
	h := now.UnixNano() / win.width
	if h <= win.head {
		return
	}
	if h-win.head > Slots {
		win.c = [Slots + 1]int32{}
		win.total = 0
	} else {
		for i := win.head + 1; i <= h; i++ {
			j := i % (Slots + 1)
			win.total -= int64(win.c[j])
			win.c[j] = 0
		}
	}
	win.head = h
}

// add counts n at time at, or gives n back (n < 0) to the slot it was
// counted in at time at. A give-back for a time that has left the window
// is dropped (its count is gone already); an add for such a time (a clock
// that went back) lands in the newest slot.
func (win *window) add(n int, at time.Time) {
	win.advance(at)
	i := at.UnixNano() / win.width
	if i < win.head-Slots {
		if n < 0 {
			return
		}
		i = win.head
	}
	j := i % (Slots + 1)
	v := int64(win.c[j]) + int64(n)
	if v < 0 { // a give-back larger than what the slot holds: keep counts whole
		n -= int(v)
		v = 0
	}
	win.c[j] = int32(v)
	win.total += int64(n)
}

// count is the number of events in the window at now.
func (win *window) count(now time.Time) int {
	win.advance(now)
	return int(win.total)
}

// slot is one non-empty slot, for the state file.
type slot struct {
	Index int64 `json:"i"`
	Count int32 `json:"n"`
}

// slots returns the non-empty slots, oldest first.
func (win *window) slots() []slot {
	var out []slot
	for i := win.head - Slots; i <= win.head; i++ {
		if v := win.c[i%(Slots+1)]; v != 0 {
			out = append(out, slot{i, v})
		}
	}
	return out
}

// restore fills a window from saved slots, dropping those that have left
// it by now.
func restoreWindow(width int64, saved []slot, now time.Time) *window {
	win := &window{width: width, head: now.UnixNano() / width}
	for _, s := range saved {
		if s.Index > win.head || s.Index < win.head-Slots || s.Count <= 0 {
			continue
		}
		win.c[s.Index%(Slots+1)] += s.Count
		win.total += int64(s.Count)
	}
	return win
}
