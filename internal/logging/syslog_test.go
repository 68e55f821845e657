package logging

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestSyslogLine: the journal's lines, one per entry, exactly.
func TestSyslogLine(t *testing.T) {
	at := time.Date(2026, 11, 30, 3, 4, 5, 6_000_000, time.UTC)
	for _, c := range []struct {
		name   string
		e      zapcore.Entry
		with   []zapcore.Field
		fields []zapcore.Field
		want   string
	}{
		// Priorities and Postfix's level words.
		{"info", zapcore.Entry{Level: zapcore.InfoLevel, Message: "decided"}, nil, nil, "<6>decided"},
		{"debug", zapcore.Entry{Level: zapcore.DebugLevel, LoggerName: "policyd.lookup", Message: "lookup"}, nil,
			[]zapcore.Field{zap.String("name", "example.net"), zap.Int("rcode", 0), zap.Bool("cache_hit", true)},
			"<7>policyd.lookup: lookup name=example.net rcode=0 cache_hit=true"},
		{"warn", zapcore.Entry{Level: zapcore.WarnLevel, LoggerName: "decide", Message: "decision failed"}, nil,
			[]zapcore.Field{zap.String("proto", "socketmap"), zap.String("domain", "example.net"), zap.Error(errors.New("lookup timed out"))},
			`<4>warning: decide: decision failed proto=socketmap domain=example.net error="lookup timed out"`},
		{"error", zapcore.Entry{Level: zapcore.ErrorLevel, Message: "reload failed"}, nil, nil, "<3>error: reload failed"},
		{"dpanic", zapcore.Entry{Level: zapcore.DPanicLevel, Message: "x"}, nil, nil, "<2>panic: x"},
		{"panic", zapcore.Entry{Level: zapcore.PanicLevel, Message: "x"}, nil, nil, "<2>panic: x"},
		{"fatal", zapcore.Entry{Level: zapcore.FatalLevel, Message: "x"}, nil, nil, "<2>fatal: x"},
		// What is missing leaves no gap.
		{"fields only", zapcore.Entry{}, nil, []zapcore.Field{zap.String("k", "v")}, "<6>k=v"},
		{"no message", zapcore.Entry{LoggerName: "policyd"}, nil, []zapcore.Field{zap.String("k", "v")}, "<6>policyd: k=v"},
		{"warning, no message", zapcore.Entry{Level: zapcore.WarnLevel}, nil, []zapcore.Field{zap.Int("n", 1)}, "<4>warning: n=1"},
		{"nothing", zapcore.Entry{}, nil, nil, "<6>"},
		{"no time", zapcore.Entry{Time: at, Message: "m"}, nil, nil, "<6>m"},
		// Messages: control characters escaped, the rest as it is.
		{"message escaped", zapcore.Entry{LoggerName: "a\tb", Message: "one\ntwo\tthree\r\x1b[0m\x7f\xff\u2028 say \"hi\" C:\\x"}, nil, nil,
			`<6>a\tb: one\ntwo\tthree\r\x1b[0m\x7f\xff\u2028 say "hi" C:\x`},
		// Values: bare when they can be, quoted and escaped when not.
		{"quoting", zapcore.Entry{}, nil, []zapcore.Field{
			zap.String("empty", ""), zap.String("space", "a b"), zap.String("quote", `a"b`), zap.String("eq", "a=b"),
			zap.String("bs", `a\b`), zap.String("ctl", "a\tb\nc\x00\x7f"), zap.String("bad", "\xffx"),
			zap.String("utf8", "jörg@b.mxd"), zap.String("ls", "a\u2028b"), zap.String("nbsp", "a\u00a0b"),
			zap.String("astral", "\U0001F600\U000E0001"), zap.String("mx", "[mx03.example.net]:587"),
			zap.String("answer", "FILTER relay:[mx03.example.net]:587"), zap.ByteString("bytes", []byte("x y")),
		}, `<6>empty="" space="a b" quote="a\"b" eq="a=b" bs="a\\b" ctl="a\tb\nc\x00\x7f" bad="\xffx"` +
			` utf8=jörg@b.mxd ls="a\u2028b" nbsp="a\u00a0b" astral="` + "\U0001F600" + `\U000e0001" mx=[mx03.example.net]:587` +
			` answer="FILTER relay:[mx03.example.net]:587" bytes="x y"`},
		{"kinds", zapcore.Entry{}, nil, []zapcore.Field{
			zap.Int64("i", -3), zap.Uint64("u", math.MaxUint64), zap.Int8("i8", -8), zap.Uint16("u16", 16), zap.Uintptr("p", 10),
			zap.Float64("f", 1.5), zap.Float32("f32", 0.25), zap.Float64("nan", math.NaN()), zap.Float64("inf", math.Inf(-1)),
			zap.Complex128("c", 1-2i), zap.Complex64("c64", 1+2i), zap.Duration("took", 1500*time.Millisecond),
			zap.Time("at", at), zap.Binary("bin", []byte{0xff, 0}), zap.Stringer("addr", netip.MustParseAddr("2001:db8::1")),
			zap.Bool("no", false), zap.NamedError("cause", nil), zap.Skip(),
		}, `<6>i=-3 u=18446744073709551615 i8=-8 u16=16 p=10 f=1.5 f32=0.25 nan=NaN inf=-Inf c=1-2i c64=1+2i` +
			` took=1.5s at=2026-11-30T03:04:05.006Z bin="/wA=" addr=2001:db8::1 no=false`},
		{"keys", zapcore.Entry{}, nil, []zapcore.Field{zap.String("a b", "v"), zap.String("", "v"), zap.String("k=\"\n", "v")},
			`<6>a_b=v _=v k___=v`},
		// Objects flattened, arrays one value, both on one line.
		{"object", zapcore.Entry{Message: "m"}, nil, []zapcore.Field{
			zap.Object("limits", testObject{"count", 3, "window", "1m"}),
			zap.Object("a", testNested{"b", testObject{"c", 1}}),
			zap.Inline(testObject{"proto", "policy"}),
		}, `<6>m limits.count=3 limits.window=1m a.b.c=1 proto=policy`},
		{"arrays", zapcore.Entry{}, nil, []zapcore.Field{
			zap.Strings("keys", []string{"log.format", "dns.servers"}),
			zap.Strings("command", []string{"postsuper", "-r", "A B"}),
			zap.Strings("none", nil),
			zap.Strings("comma", []string{"a,b", "c"}),
			zap.Ints("n", []int{1, -2}),
			zap.Durations("d", []time.Duration{time.Second}),
			zap.Bools("b", []bool{true}),
			zap.Objects("hosts", []testObject{{"name", "a", "port", 25}, {"name", "b c", "port", 587}}),
			zap.Array("nested", testArray{[]string{"x"}, []string{}}),
			zap.Errors("errs", []error{errors.New("one"), errors.New("two three")}),
		}, `<6>keys=[log.format,dns.servers] command="[postsuper,-r,\"A B\"]" none=[] comma="[\"a,b\",c]" n=[1,-2]` +
			` d=[1s] b=[true] hosts="[{name=a,port=25},{name=\"b c\",port=587}]" nested=[[x],[]]` +
			` errs="[{error=one},{error=\"two three\"}]"`},
		// Reflected values through their JSON.
		{"reflected", zapcore.Entry{}, nil, []zapcore.Field{
			zap.Any("fields", map[string]string{"b": "2 3", "a": "1"}),
			zap.Any("codes", []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}),
			zap.Any("v", struct {
				A int
				B []string
				C map[string]any
				D *int
			}{1, []string{"x", "y z"}, map[string]any{"e": []any{map[string]any{"f": 1.5}}}, nil}),
			zap.Any("nil", nil),
			zap.Any("empty", map[string]int{}),
			zap.Reflect("bad", func() {}),
		}, `<6>fields.a=1 fields.b="2 3" codes=[127.0.0.2,127.0.0.3] v.A=1 v.B="[x,\"y z\"]" v.C.e="[{f=1.5}]" v.D=null` +
			` nil=null badError="json: unsupported type: func()"`},
		// Namespaces and context.
		{"namespace", zapcore.Entry{}, nil, []zapcore.Field{zap.String("a", "1"), zap.Namespace("req"), zap.String("id", "1"),
			zap.Namespace("x"), zap.Int("n", 2)}, `<6>a=1 req.id=1 req.x.n=2`},
		{"with", zapcore.Entry{Message: "x"}, []zapcore.Field{zap.String("listener", "policy"), zap.Object("o", testObject{"k", "v w"})},
			[]zapcore.Field{zap.String("k", "v")}, `<6>x listener=policy o.k="v w" k=v`},
		{"with namespace", zapcore.Entry{}, []zapcore.Field{zap.Namespace("conn"), zap.Int("id", 7)},
			[]zapcore.Field{zap.String("k", "v")}, `<6>conn.id=7 conn.k=v`},
		// A stack and a caller stay on the line.
		{"stack", zapcore.Entry{Level: zapcore.ErrorLevel, Message: "panic in milter stage", Stack: "goroutine 1\n\tmain.go:1",
			Caller: zapcore.NewEntryCaller(0, "/src/milter/filter/filter.go", 443, true)},
			nil, []zapcore.Field{zap.Any("panic", "boom")},
			`<3>error: panic in milter stage caller=filter/filter.go:443 panic=boom stack="goroutine 1\n\tmain.go:1"`},
	} {
		enc := newSyslog().Clone()
		for _, f := range c.with {
			f.AddTo(enc)
		}
		b, err := enc.EncodeEntry(c.e, c.fields)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if diff := cmp.Diff(c.want+"\n", b.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
		b.Free()
	}
}

// testObject is an object of key, value pairs.
type testObject []any

func (o testObject) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for i := 0; i+1 < len(o); i += 2 {
		switch v := o[i+1].(type) {
		case string:
			enc.AddString(o[i].(string), v)
		case int:
			enc.AddInt(o[i].(string), v)
		}
	}
	return nil
}

// testNested is an object holding one object.
type testNested struct {
	key string
	obj testObject
}

func (n testNested) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return enc.AddObject(n.key, n.obj)
}

// testArray is an array of arrays of strings.
type testArray [][]string

func (a testArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, s := range a {
		if err := enc.AppendArray(zapcore.ArrayMarshalerFunc(func(e zapcore.ArrayEncoder) error {
			for _, v := range s {
				e.AppendString(v)
			}
			return nil
		})); err != nil {
			return err
		}
	}
	return nil
}

// TestSyslogAnyBytes: whatever bytes come in a message, a logger name, a
// key or a value, the line is one line of printable UTF-8, and a value
// reads back as it was, alone and in an array.
func TestSyslogAnyBytes(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "@", ".", " ", "=", ",", "[", "]", "{", "}", `"`, `\`, "\t", "\n", "\r", "\x00", "\x1f",
		"\x7f", "\x80", "\xc3", "é", "\u2028", "\u0085", "\ufeff", "\U0001F600", "\xf0\x9f"}
	for range 20000 {
		var b strings.Builder
		for range rnd.IntN(10) {
			b.WriteString(alphabet[rnd.IntN(len(alphabet))])
		}
		checkSyslogString(t, b.String())
	}
}

func FuzzSyslogString(f *testing.F) {
	for _, s := range []string{"", "a b", "x\ny", "\xff", "\u2028", `"\`, "[a,b]", "k=v"} {
		f.Add(s)
	}
	f.Fuzz(checkSyslogString)
}

func checkSyslogString(t *testing.T, s string) {
	t.Helper()
	line := encode(t, zapcore.Entry{Level: zapcore.WarnLevel, LoggerName: s, Message: s},
		zap.String(s, s), zap.Strings(s, []string{s, s}), zap.Object(s, testObject{s, s}))
	body, ok := strings.CutSuffix(line, "\n")
	if !ok || !utf8.ValidString(body) || strings.ContainsFunc(body, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Fatalf("%q: line %q is not one line of printable UTF-8", s, line)
	}
	v, _ := strings.CutPrefix(encode(t, zapcore.Entry{}, zap.String("v", s)), "<6>v=")
	if got := unquote(t, strings.TrimSuffix(v, "\n"), false); got != s {
		t.Errorf("%q: value %s reads back as %q", s, v, got)
	}
	a, _ := strings.CutPrefix(encode(t, zapcore.Entry{}, zap.Strings("a", []string{s})), "<6>a=")
	elem, open := strings.CutPrefix(unquote(t, strings.TrimSuffix(a, "\n"), false), "[")
	elem, closed := strings.CutSuffix(elem, "]")
	if !open || !closed {
		t.Fatalf("%q: array %s", s, a)
	}
	if got := unquote(t, elem, true); got != s {
		t.Errorf("%q: array %s reads back as [%q]", s, a, got)
	}
}

func encode(t *testing.T, e zapcore.Entry, fields ...zapcore.Field) string {
	t.Helper()
	b, err := newSyslog().EncodeEntry(e, fields)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	return b.String()
}

// unquote reads a logfmt value: bare, or quoted as Go quotes; inner, an
// element of an array.
func unquote(t *testing.T, v string, inner bool) string {
	t.Helper()
	if !strings.HasPrefix(v, `"`) {
		if v == "" || strings.ContainsAny(v, " \"=\\") || inner && strings.ContainsAny(v, ",[]{}") {
			t.Fatalf("bare value %q holds a byte that needs quoting", v)
		}
		return v
	}
	s, err := strconv.Unquote(v)
	if err != nil {
		t.Fatalf("value %s: %v", v, err)
	}
	return s
}

// TestDetect: stderr is the journal when JOURNAL_STREAM names its device
// and inode, and only then; the console form is then the journal's, and
// JSON gets the priority too.
func TestDetect(t *testing.T) {
	f := tempFile(t)
	other := tempFile(t)
	dev, ino := devIno(t, f)
	for _, c := range []struct {
		stream string
		file   *os.File
		want   bool
	}{
		{fmt.Sprintf("%d:%d", dev, ino), f, true},
		{fmt.Sprintf("%d:%d", dev, ino+1), f, false},
		{fmt.Sprintf("%d:%d", dev+1, ino), f, false},
		{fmt.Sprintf("%d:%d", dev, ino), other, false}, // a child's stderr elsewhere, the variable inherited
		{fmt.Sprintf("%d:%d:", dev, ino), f, false},
		{fmt.Sprint(ino), f, false},
		{"", f, false},
	} {
		if got := toJournal(c.stream, c.file); got != c.want {
			t.Errorf("toJournal(%q, %s) = %v, want %v", c.stream, c.file.Name(), got, c.want)
		}
	}
	stream := fmt.Sprintf("%d:%d", dev, ino)
	for _, c := range []struct {
		format, stream, want string
	}{
		{"console", stream, "<4>warning: policyd: listed zone=zen.example\n"},
		{"", stream, "<4>warning: policyd: listed zone=zen.example\n"},
		{"json", stream, `<4>{"level":"warn","logger":"policyd","msg":"listed","zone":"zen.example"}` + "\n"},
		{"console", "", "\twarn\tpolicyd\tlisted\t{\"zone\": \"zen.example\"}\n"},
		{"console", "1:2", "\twarn\tpolicyd\tlisted\t{\"zone\": \"zen.example\"}\n"},
		{"json", "", `"level":"warn","ts":`},
	} {
		f := tempFile(t)
		dev, ino := devIno(t, f)
		stream := strings.Replace(c.stream, stream, fmt.Sprintf("%d:%d", dev, ino), 1)
		log, _, err := newFor(Options{Level: "info", Format: c.format}, f, stream)
		if err != nil {
			t.Fatal(err)
		}
		log.Named("policyd").Warn("listed", zap.String("zone", "zen.example"))
		out := readFile(t, f)
		if c.stream == "" || c.stream == "1:2" {
			if !strings.Contains(out, c.want) || strings.HasPrefix(out, "<") {
				t.Errorf("%s, JOURNAL_STREAM=%q: %q, want the terminal's form, with %q", c.format, c.stream, out, c.want)
			}
		} else if out != c.want {
			t.Errorf("%s, JOURNAL_STREAM=%q: %q, want %q", c.format, c.stream, out, c.want)
		}
	}
}

// TestSyslogLogger: through a whole logger, Named and With add to the
// lines as they should, a warning is written at once, Sync writes the
// rest, and loggers are safe to share.
func TestSyslogLogger(t *testing.T) {
	f := tempFile(t)
	log, level, err := newLogger(Options{Level: "debug", Format: "console"}, f, true)
	if err != nil {
		t.Fatal(err)
	}
	route := log.Named("policyd").With(zap.String("listener", "policy")).Named("route")
	route.Info("decision", zap.String("recipient", "a@b.mxd"))
	route.Warn("slow", zap.Duration("took", 1500*time.Millisecond))
	want := []string{
		"<6>policyd.route: decision listener=policy recipient=a@b.mxd",
		"<4>warning: policyd.route: slow listener=policy took=1.5s",
	}
	if diff := cmp.Diff(want, lines(readFile(t, f))); diff != "" {
		t.Errorf("before Sync, a warning writes out what came before it (-want +got):\n%s", diff)
	}

	conn := log.With(zap.Namespace("conn"), zap.Int("id", 7))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				conn.With(zap.Int("worker", i)).Debug("request", zap.Int("n", j))
			}
		})
	}
	wg.Wait()
	log.Info("plain")
	if err := SetLevel(level, "info"); err != nil {
		t.Fatal(err)
	}
	conn.Debug("hidden")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	got := lines(readFile(t, f))
	if len(got) != 2+200+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(got), 2+200+1, strings.Join(got, "\n"))
	}
	for _, l := range got[2:202] {
		if !strings.HasPrefix(l, "<7>request conn.id=7 conn.worker=") || !strings.Contains(l, " conn.n=") {
			t.Errorf("line %q: want the context and the namespace", l)
		}
	}
	if got[202] != "<6>plain" {
		t.Errorf("last line %q, want %q: With must not change its parent", got[202], "<6>plain")
	}
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func devIno(t *testing.T, f *os.File) (uint64, uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Dev), st.Ino
}

func readFile(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
