package geo

import (
	"bufio"
	"context"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Delegated is a table of address ranges from RIR delegated statistics
// files: "registry|cc|type|start|value|date|status", where an ipv4 value
// is a number of addresses (not always a power of two) and an ipv6 value
// a prefix length.
type Delegated struct {
	ranges []rng     // sorted by start, not overlapping
	built  time.Time // the oldest file's date
}

// Built is the date of the oldest file: the end date of its header
// ("2|apnic|20250102|...|19830613|20250101|+1000"), else its modification
// time.
func (d *Delegated) Built() time.Time { return d.built }

type rng struct {
	start, end netip.Addr // inclusive, IPv4 as 4-byte, IPv6 as 16-byte
	cc         string
}

// LoadDelegated reads the files.
func LoadDelegated(paths ...string) (*Delegated, error) {
	d := &Delegated{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("delegated file: %w", err)
		}
		var date time.Time
		if fi, err := f.Stat(); err == nil {
			date = fi.ModTime()
		}
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			if t, ok := headerDate(sc.Text()); ok {
				date = t
			}
			r, ok, err := ParseDelegatedLine(sc.Text())
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s:%d: %w", p, n, err)
			}
			if ok {
				d.ranges = append(d.ranges, r)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if d.built.IsZero() || date.Before(d.built) {
			d.built = date
		}
	}
	slices.SortFunc(d.ranges, func(a, b rng) int { return a.start.Compare(b.start) })
	return d, nil
}

// headerDate reads the end date of a version line (the only line whose
// first field is a number), "2|apnic|serial|records|start|end|offset".
func headerDate(line string) (time.Time, bool) {
	f := strings.Split(strings.TrimSpace(line), "|")
	if len(f) < 6 || strings.Trim(f[0], "0123456789.") != "" {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102", f[5])
	return t, err == nil
}

// ParseDelegatedLine reads one record; ok is false for version, summary,
// comment, ASN and unassigned lines.
func ParseDelegatedLine(line string) (r rng, ok bool, err error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return rng{}, false, nil
	}
	f := strings.Split(line, "|")
	if len(f) < 7 || (f[2] != "ipv4" && f[2] != "ipv6") || f[1] == "*" {
		return rng{}, false, nil
	}
	cc := strings.ToUpper(f[1])
	if cc == "" || cc == "ZZ" || f[6] == "available" || f[6] == "reserved" {
		return rng{}, false, nil
	}
	start, err := netip.ParseAddr(f[3])
	if err != nil {
		return rng{}, false, err
	}
	v, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return rng{}, false, fmt.Errorf("bad value %q", f[4])
	}
	switch {
	case f[2] == "ipv4" && start.Is4() && v >= 1 && v <= 1<<32:
		end := addN(start, v-1)
		if !end.IsValid() || end.Less(start) {
			return rng{}, false, fmt.Errorf("range %s+%d overflows", start, v)
		}
		return rng{start, end, cc}, true, nil
	case f[2] == "ipv6" && start.Is6() && v <= 128:
		p, err := start.Prefix(int(v))
		if err != nil {
			return rng{}, false, err
		}
		return rng{p.Addr(), lastAddr(p), cc}, true, nil
	}
	return rng{}, false, fmt.Errorf("bad %s record", f[2])
}

func addN(a netip.Addr, n uint64) netip.Addr {
	b := new(big.Int).SetBytes(a.AsSlice())
	b.Add(b, new(big.Int).SetUint64(n))
	raw := b.Bytes()
	size := len(a.AsSlice())
	if len(raw) > size {
		return netip.Addr{}
	}
	buf := make([]byte, size)
	copy(buf[size-len(raw):], raw)
	out, _ := netip.AddrFromSlice(buf)
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Country finds the range holding ip.
func (d *Delegated) Country(_ context.Context, ip netip.Addr) (string, error) {
	ip = ip.Unmap()
	i, _ := slices.BinarySearchFunc(d.ranges, ip, func(r rng, t netip.Addr) int { return r.start.Compare(t) })
	// ranges[i-1] is the last range starting at or before ip (or ranges[i] if equal).
	for _, j := range []int{i, i - 1} {
		if j >= 0 && j < len(d.ranges) {
			r := d.ranges[j]
			if !ip.Less(r.start) && !r.end.Less(ip) && r.start.BitLen() == ip.BitLen() {
				return r.cc, nil
			}
		}
	}
	return "", nil
}
