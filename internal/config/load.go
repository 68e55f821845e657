package config

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Key != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.Key != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors are all the problems found in one file, reported together.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// UnmarshalText reads a duration such as "30s" or "5m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (write it like \"30s\", \"5m\" or \"24h\")")
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go does ("1m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Source names the configuration LoadDefault read, for messages: the
// path it returned, or "embedded defaults" for "".
func Source(used string) string {
	if used == "" {
		return "embedded defaults"
	}
	return used
}

// LoadDefault loads path; with path "" it loads DefaultPath if that file
// exists and otherwise returns Default(). It returns the path it read, ""
// for the embedded defaults.
func LoadDefault(path string) (*Config, string, error) {
	if path == "" {
		if _, err := os.Stat(DefaultPath); errors.Is(err, os.ErrNotExist) {
			return Default(), "", nil
		}
		path = DefaultPath
	}
	c, err := Load(path)
	return c, path, err
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data (named name in messages) onto Default() and validates
// it. Every problem is reported, each with file, line and key.
//
// To report them all at once, each key is decoded on its own: the file is
// first read into toml.Primitive values table by table, then every key is
// decoded into its field. A bad value then spoils only its own key.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	p := &parser{file: name, lines: keyLines(data)}
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: name, Line: pe.Position.Line, Msg: "syntax error: " + pe.Message}}
		}
		return nil, Errors{{File: name, Msg: err.Error()}}
	}
	p.md = md
	p.decodeTable(top, reflect.ValueOf(c).Elem(), "")
	c.validate(p)
	if len(p.errs) > 0 {
		// In the order of the file, whatever order the checks ran in.
		slices.SortStableFunc(p.errs, func(a, b *Error) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
		})
		return nil, p.errs
	}
	return c, nil
}

type parser struct {
	file  string
	md    toml.MetaData
	lines map[string]int
	errs  Errors
}

func (p *parser) add(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: p.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// line finds where key (or, failing that, its nearest parent) was written.
func (p *parser) line(key string) int {
	for k := key; k != ""; {
		if l, ok := p.lines[k]; ok {
			return l
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

var textUnmarshaler = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()

// decodeTable decodes the keys of one table into the struct v.
func (p *parser) decodeTable(tbl map[string]toml.Primitive, v reflect.Value, path string) {
	fields := map[string]reflect.Value{}
	for i := 0; i < v.NumField(); i++ {
		if tag := v.Type().Field(i).Tag.Get("toml"); tag != "" {
			fields[tag] = v.Field(i)
		}
	}
	for k, prim := range tbl {
		key := join(path, k)
		f, ok := fields[k]
		if !ok {
			if near := nearest(k, slices.Collect(maps.Keys(fields))); near != "" {
				p.add(key, "unknown key (did you mean %s?)", join(path, near))
			} else {
				p.add(key, "unknown key")
			}
			continue
		}
		p.decodeValue(prim, f, key)
	}
}

func (p *parser) decodeValue(prim toml.Primitive, f reflect.Value, key string) {
	switch {
	case f.Type() == reflect.TypeFor[[]netip.Addr]() || f.Type() == reflect.TypeFor[[]netip.Prefix]():
		var raw []string
		if p.decode(prim, &raw, key, describe(f.Type())) {
			f.Set(p.parseList(raw, f.Type(), key))
		}
	case f.Type() == reflect.TypeFor[map[string][]netip.Prefix]():
		var raw map[string][]string
		if !p.decode(prim, &raw, key, describe(f.Type())) {
			return
		}
		if len(raw) == 0 {
			f.Set(reflect.Zero(f.Type()))
			return
		}
		m := reflect.MakeMap(f.Type())
		for k, l := range raw {
			m.SetMapIndex(reflect.ValueOf(k), p.parseList(l, f.Type().Elem(), join(key, k)))
		}
		f.Set(m)
	case f.Kind() == reflect.Struct && !reflect.PointerTo(f.Type()).Implements(textUnmarshaler):
		var sub map[string]toml.Primitive
		if p.decode(prim, &sub, key, "a table") {
			p.decodeTable(sub, f, key)
		}
	case f.Kind() == reflect.Map && f.Type().Elem().Kind() == reflect.Struct:
		var sub map[string]toml.Primitive
		if !p.decode(prim, &sub, key, "a table") {
			return
		}
		if f.IsNil() {
			f.Set(reflect.MakeMap(f.Type()))
		}
		for name, ep := range sub {
			elem := reflect.New(f.Type().Elem()).Elem()
			if old := f.MapIndex(reflect.ValueOf(name)); old.IsValid() {
				elem.Set(old) // a built-in entry: keys not written keep their defaults
			} else if en := elem.FieldByName("Enabled"); en.IsValid() {
				en.SetBool(true)
			}
			var tbl map[string]toml.Primitive
			if p.decode(ep, &tbl, join(key, name), "a table") {
				p.decodeTable(tbl, elem, join(key, name))
			}
			f.SetMapIndex(reflect.ValueOf(name), elem)
		}
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
		var items []toml.Primitive
		if !p.decode(prim, &items, key, "an array of tables ([["+key+"]])") {
			return
		}
		out := reflect.MakeSlice(f.Type(), len(items), len(items))
		for i, ip := range items {
			ikey := fmt.Sprintf("%s[%d]", key, i)
			var tbl map[string]toml.Primitive
			if p.decode(ip, &tbl, ikey, "a table") {
				p.decodeTable(tbl, out.Index(i), ikey)
			}
		}
		f.Set(out)
	default:
		fresh := reflect.New(f.Type())
		if p.decode(prim, fresh.Interface(), key, describe(f.Type())) {
			if fresh.Elem().Kind() == reflect.Slice && fresh.Elem().Len() == 0 {
				fresh.Elem().Set(reflect.Zero(f.Type())) // [] is the same as leaving it out
			}
			f.Set(fresh.Elem())
		}
	}
}

// parseList parses a list of addresses or networks (typ is []netip.Addr
// or []netip.Prefix), reporting each bad entry.
func (p *parser) parseList(raw []string, typ reflect.Type, key string) reflect.Value {
	if len(raw) == 0 {
		return reflect.Zero(typ)
	}
	out := reflect.MakeSlice(typ, 0, len(raw))
	for _, r := range raw {
		var v any
		var err error
		if typ.Elem() == reflect.TypeFor[netip.Addr]() {
			v, err = netip.ParseAddr(r)
		} else {
			v, err = netip.ParsePrefix(r)
		}
		if err != nil {
			p.add(key, "%q is not %s", r, strings.TrimPrefix(describe(typ.Elem()), "a list of "))
			continue
		}
		out = reflect.Append(out, reflect.ValueOf(v))
	}
	return out
}

// decode decodes one primitive, recording an error for key on failure.
func (p *parser) decode(prim toml.Primitive, dst any, key, want string) bool {
	err := p.md.PrimitiveDecode(prim, dst)
	if err == nil {
		return true
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		p.add(key, "%s", pe.Message)
	} else {
		p.add(key, "expected %s", want)
	}
	return false
}

func describe(t reflect.Type) string {
	switch t.String() {
	case "netip.Addr":
		return "an IP address"
	case "netip.Prefix":
		return "a network such as \"192.0.2.0/24\""
	case "[]netip.Addr":
		return "a list of IP addresses"
	case "[]netip.Prefix":
		return "a list of networks such as [\"192.0.2.0/24\"]"
	case "config.Duration":
		return "a duration such as \"30s\""
	case "[]string":
		return "a list of strings"
	case "[]uint32":
		return "a list of numbers"
	case "map[string][]netip.Prefix":
		return "a table of lists of networks"
	case "map[string]int":
		return "a table of whole numbers, such as { \"sasl_username:bulk\" = 1000 }"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	}
	return t.String()
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

var (
	arrayHeader = regexp.MustCompile(`^\s*\[\[\s*([^\]]+?)\s*\]\]`)
	tableHeader = regexp.MustCompile(`^\s*\[\s*([^\]]+?)\s*\]`)
	keyLine     = regexp.MustCompile(`^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=`)
)

// keyLines maps each key path written in data ("dns.timeout",
// "rules[1].route") to its line. It is a light scan, good for messages.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	count := map[string]int{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if m := arrayHeader.FindStringSubmatch(l); m != nil {
			base := unquote(m[1])
			cur = fmt.Sprintf("%s[%d]", arrayPath(base, count), count[base])
			count[base]++
			lines[cur] = n
			continue
		}
		if m := tableHeader.FindStringSubmatch(l); m != nil {
			cur = arrayPath(unquote(m[1]), count)
			lines[cur] = n
			continue
		}
		if m := keyLine.FindStringSubmatch(l); m != nil {
			// A dotted key (a.b = 1) names its tables too.
			full := join(cur, unquote(m[1]))
			lines[full] = n
			for i := strings.LastIndexByte(full, '.'); i > len(cur); i = strings.LastIndexByte(full[:i], '.') {
				if _, seen := lines[full[:i]]; !seen {
					lines[full[:i]] = n
				}
			}
		}
	}
	return lines
}

// arrayPath rewrites "milter.dkim.keys.x" style headers under arrays of
// tables to carry the index of the latest element ("rules[2].x").
func arrayPath(name string, count map[string]int) string {
	parts := strings.Split(name, ".")
	out := ""
	for i, part := range parts {
		out = join(out, part)
		prefix := strings.Join(parts[:i+1], ".")
		if c, ok := count[prefix]; ok && i < len(parts)-1 {
			out += "[" + strconv.Itoa(c-1) + "]"
		}
	}
	return out
}

func unquote(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// nearest returns the known key closest to k — at most two edits away, or
// the one k is a prefix of — for a "did you mean" hint; "" when none is.
func nearest(k string, known []string) string {
	slices.Sort(known)
	best, bestD := "", 3
	for _, c := range known {
		d := editDistance(k, c)
		if strings.HasPrefix(c, k) && len(k) >= 3 {
			d = min(d, 2)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is Levenshtein's distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
