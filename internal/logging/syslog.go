package logging

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// The journal's form of a line, for a stream that journald reads (and
// rsyslog then copies to /var/log/mail.log):
//
//	<4>warning: policyd.route: decision failed proto=socketmap error="lookup timed out"
//
// sd-daemon(3)'s priority prefix; the level written once, as Postfix
// writes it in mail.log ("warning: ", "error: ", "fatal: ", "panic: ";
// nothing for info and debug); the logger's name and the message; the
// fields as logfmt's key=value, separated by spaces. No time (journald
// stamps each line) and no control character anywhere: a tab or a newline
// in a message or a value is written as \t or \n, so that rsyslog has
// nothing to escape as #011 and a line is never split.
//
// A value is quoted when it is empty or holds a space, '"', '=', '\', or
// a byte that must be escaped; the escapes are Go's (\", \\, \n, \t, \r,
// \xHH for a control or invalid UTF-8 byte, \uHHHH for a rune that does
// not print), so strconv.Unquote reads a quoted value back exactly.
// Objects are flattened into dotted keys (limits.count=3); an array is one
// value, [a,b], whose elements are quoted by the same rule and also when
// they hold one of ",[]{}"; an object inside an array is {k=v,k2=w}.
// Reflected values (zap.Any of a map, a slice, a struct) are read through
// their JSON form, as zap's JSON encoder writes them, and written the same
// way.

// syslogEncoder is the zapcore.Encoder of journal lines. Its context
// (With) is kept as already written text.
type syslogEncoder struct{ *objectWriter }

func newSyslog() syslogEncoder { return syslogEncoder{&objectWriter{buf: bufs.Get()}} }

func (s syslogEncoder) Clone() zapcore.Encoder {
	c := &objectWriter{buf: bufs.Get(), prefix: s.prefix}
	c.buf.AppendBytes(s.buf.Bytes())
	return syslogEncoder{c}
}

func (s syslogEncoder) EncodeEntry(e zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line := bufs.Get()
	line.AppendString(priority(e.Level))
	start := line.Len()
	if w := levelWord(e.Level); w != "" {
		line.AppendString(w)
	}
	if e.LoggerName != "" {
		space(line, start)
		appendEscaped(line, e.LoggerName, false)
		line.AppendByte(':')
	}
	if e.Message != "" {
		space(line, start)
		appendEscaped(line, e.Message, false)
	}
	if e.Caller.Defined {
		space(line, start)
		line.AppendString("caller=")
		appendValue(line, e.Caller.TrimmedPath(), false)
	}
	if s.buf.Len() > 0 {
		space(line, start)
		line.AppendBytes(s.buf.Bytes())
	}
	if len(fields) > 0 {
		w := objectWriters.Get().(*objectWriter)
		*w = objectWriter{buf: line, start: start, prefix: s.prefix}
		for i := range fields {
			fields[i].AddTo(w)
		}
		*w = objectWriter{}
		objectWriters.Put(w)
	}
	if e.Stack != "" {
		space(line, start)
		line.AppendString("stack=")
		appendValue(line, e.Stack, false)
	}
	line.AppendString(zapcore.DefaultLineEnding)
	return line, nil
}

var objectWriters = sync.Pool{New: func() any { return new(objectWriter) }}

// priority maps a zap level to sd-daemon's prefix.
func priority(l zapcore.Level) string {
	switch {
	case l >= zapcore.DPanicLevel:
		return "<2>" // crit
	case l == zapcore.ErrorLevel:
		return "<3>"
	case l == zapcore.WarnLevel:
		return "<4>"
	case l == zapcore.InfoLevel:
		return "<6>"
	}
	return "<7>"
}

// levelWord is how Postfix marks a line's severity in mail.log (msg(3):
// msg_warn, msg_error, msg_fatal, msg_panic); info and debug go unmarked.
func levelWord(l zapcore.Level) string {
	switch {
	case l >= zapcore.FatalLevel:
		return "fatal:"
	case l >= zapcore.DPanicLevel:
		return "panic:"
	case l == zapcore.ErrorLevel:
		return "error:"
	case l == zapcore.WarnLevel:
		return "warning:"
	}
	return ""
}

// space separates what follows from what b holds after start.
func space(b *buffer.Buffer, start int) {
	if b.Len() > start {
		b.AppendByte(' ')
	}
}

// objectWriter writes fields as key=value: at the top of a line separated
// by spaces, objects flattened into dotted keys; inside an array's or an
// object's brackets (inner) separated by commas, objects in braces.
type objectWriter struct {
	buf    *buffer.Buffer
	start  int    // where this level's fields begin: no separator before the first
	prefix string // the dotted names of the namespaces opened (zap.Namespace)
	inner  bool
}

func (w *objectWriter) key(k string) {
	if w.buf.Len() > w.start {
		if w.inner {
			w.buf.AppendByte(',')
		} else {
			w.buf.AppendByte(' ')
		}
	}
	if k == "" && w.prefix == "" {
		k = "_"
	}
	appendKey(w.buf, w.prefix)
	appendKey(w.buf, k)
	w.buf.AppendByte('=')
}

func (w *objectWriter) val() valueWriter { return valueWriter{w.buf, w.inner} }

func (w *objectWriter) AddString(k, v string)                { w.key(k); w.val().str(v) }
func (w *objectWriter) AddByteString(k string, v []byte)     { w.key(k); w.val().str(string(v)) }
func (w *objectWriter) AddBinary(k string, v []byte)         { w.key(k); w.val().binary(v) }
func (w *objectWriter) AddBool(k string, v bool)             { w.key(k); w.buf.AppendBool(v) }
func (w *objectWriter) AddInt64(k string, v int64)           { w.key(k); w.buf.AppendInt(v) }
func (w *objectWriter) AddInt(k string, v int)               { w.AddInt64(k, int64(v)) }
func (w *objectWriter) AddInt32(k string, v int32)           { w.AddInt64(k, int64(v)) }
func (w *objectWriter) AddInt16(k string, v int16)           { w.AddInt64(k, int64(v)) }
func (w *objectWriter) AddInt8(k string, v int8)             { w.AddInt64(k, int64(v)) }
func (w *objectWriter) AddUint64(k string, v uint64)         { w.key(k); w.buf.AppendUint(v) }
func (w *objectWriter) AddUint(k string, v uint)             { w.AddUint64(k, uint64(v)) }
func (w *objectWriter) AddUint32(k string, v uint32)         { w.AddUint64(k, uint64(v)) }
func (w *objectWriter) AddUint16(k string, v uint16)         { w.AddUint64(k, uint64(v)) }
func (w *objectWriter) AddUint8(k string, v uint8)           { w.AddUint64(k, uint64(v)) }
func (w *objectWriter) AddUintptr(k string, v uintptr)       { w.AddUint64(k, uint64(v)) }
func (w *objectWriter) AddFloat64(k string, v float64)       { w.key(k); w.val().float(v, 64) }
func (w *objectWriter) AddFloat32(k string, v float32)       { w.key(k); w.val().float(float64(v), 32) }
func (w *objectWriter) AddComplex128(k string, v complex128) { w.key(k); w.val().complex(v, 64) }
func (w *objectWriter) AddComplex64(k string, v complex64) {
	w.key(k)
	w.val().complex(complex128(v), 32)
}
func (w *objectWriter) AddDuration(k string, v time.Duration) { w.key(k); w.val().str(v.String()) }
func (w *objectWriter) AddTime(k string, v time.Time)         { w.key(k); w.val().time(v) }

func (w *objectWriter) OpenNamespace(k string) { w.prefix += k + "." }

func (w *objectWriter) AddArray(k string, m zapcore.ArrayMarshaler) error {
	w.key(k)
	return w.val().array(func(a *arrayWriter) error { return m.MarshalLogArray(a) })
}

func (w *objectWriter) AddObject(k string, m zapcore.ObjectMarshaler) error {
	if !w.inner {
		return m.MarshalLogObject(&objectWriter{buf: w.buf, start: w.start, prefix: w.prefix + k + "."})
	}
	w.key(k)
	return w.val().object(func(o *objectWriter) error { return m.MarshalLogObject(o) })
}

func (w *objectWriter) AddReflected(k string, v any) error {
	dec, err := jsonOf(v)
	if err != nil {
		return err
	}
	return w.addJSON(k, dec)
}

// addJSON writes the JSON value dec reads next under key k.
func (w *objectWriter) addJSON(k string, dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == json.Delim('{') && !w.inner {
		o := &objectWriter{buf: w.buf, start: w.start, prefix: w.prefix + k + "."}
		return o.jsonMembers(dec)
	}
	w.key(k)
	return w.val().json(tok, dec)
}

// jsonMembers writes the members of a JSON object whose '{' has been read,
// and reads its '}'.
func (w *objectWriter) jsonMembers(dec *json.Decoder) error {
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		if err := w.addJSON(k.(string), dec); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

// jsonOf reads v as zap's JSON encoder would write it.
func jsonOf(v any) (*json.Decoder, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec, nil
}

// arrayWriter writes an array's elements, separated by commas.
type arrayWriter struct {
	buf   *buffer.Buffer
	start int
}

func (a *arrayWriter) next() valueWriter {
	if a.buf.Len() > a.start {
		a.buf.AppendByte(',')
	}
	return valueWriter{a.buf, true}
}

func (a *arrayWriter) AppendString(v string)          { a.next().str(v) }
func (a *arrayWriter) AppendByteString(v []byte)      { a.next().str(string(v)) }
func (a *arrayWriter) AppendBool(v bool)              { a.next().buf.AppendBool(v) }
func (a *arrayWriter) AppendInt64(v int64)            { a.next().buf.AppendInt(v) }
func (a *arrayWriter) AppendInt(v int)                { a.AppendInt64(int64(v)) }
func (a *arrayWriter) AppendInt32(v int32)            { a.AppendInt64(int64(v)) }
func (a *arrayWriter) AppendInt16(v int16)            { a.AppendInt64(int64(v)) }
func (a *arrayWriter) AppendInt8(v int8)              { a.AppendInt64(int64(v)) }
func (a *arrayWriter) AppendUint64(v uint64)          { a.next().buf.AppendUint(v) }
func (a *arrayWriter) AppendUint(v uint)              { a.AppendUint64(uint64(v)) }
func (a *arrayWriter) AppendUint32(v uint32)          { a.AppendUint64(uint64(v)) }
func (a *arrayWriter) AppendUint16(v uint16)          { a.AppendUint64(uint64(v)) }
func (a *arrayWriter) AppendUint8(v uint8)            { a.AppendUint64(uint64(v)) }
func (a *arrayWriter) AppendUintptr(v uintptr)        { a.AppendUint64(uint64(v)) }
func (a *arrayWriter) AppendFloat64(v float64)        { a.next().float(v, 64) }
func (a *arrayWriter) AppendFloat32(v float32)        { a.next().float(float64(v), 32) }
func (a *arrayWriter) AppendComplex128(v complex128)  { a.next().complex(v, 64) }
func (a *arrayWriter) AppendComplex64(v complex64)    { a.next().complex(complex128(v), 32) }
func (a *arrayWriter) AppendDuration(v time.Duration) { a.next().str(v.String()) }
func (a *arrayWriter) AppendTime(v time.Time)         { a.next().time(v) }
func (a *arrayWriter) AppendReflected(v any) error {
	dec, err := jsonOf(v)
	if err != nil {
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	return a.next().json(tok, dec)
}

func (a *arrayWriter) AppendArray(m zapcore.ArrayMarshaler) error {
	return a.next().array(func(b *arrayWriter) error { return m.MarshalLogArray(b) })
}

func (a *arrayWriter) AppendObject(m zapcore.ObjectMarshaler) error {
	return a.next().object(func(o *objectWriter) error { return m.MarshalLogObject(o) })
}

// valueWriter writes one value, by the rules of the top of the line or,
// inner, of an array's or object's brackets.
type valueWriter struct {
	buf   *buffer.Buffer
	inner bool
}

func (v valueWriter) str(s string) { appendValue(v.buf, s, v.inner) }

func (v valueWriter) float(f float64, bits int) {
	switch {
	case math.IsNaN(f):
		v.buf.AppendString("NaN")
	case math.IsInf(f, 1):
		v.buf.AppendString("+Inf")
	case math.IsInf(f, -1):
		v.buf.AppendString("-Inf")
	default:
		v.buf.AppendFloat(f, bits)
	}
}

func (v valueWriter) complex(c complex128, bits int) {
	v.float(real(c), bits)
	if i := imag(c); i >= 0 || math.IsNaN(i) {
		v.buf.AppendByte('+')
	}
	v.float(imag(c), bits)
	v.buf.AppendByte('i')
}

func (v valueWriter) time(t time.Time) { v.buf.AppendTime(t, "2006-01-02T15:04:05.000Z0700") }

func (v valueWriter) binary(b []byte) { v.str(base64.StdEncoding.EncodeToString(b)) }

// array writes [elements]; at the top of a line the whole is one value,
// quoted when it must be.
func (v valueWriter) array(marshal func(*arrayWriter) error) error {
	out := v.buf
	if !v.inner {
		out = bufs.Get()
		defer out.Free()
	}
	out.AppendByte('[')
	err := marshal(&arrayWriter{buf: out, start: out.Len()})
	out.AppendByte(']')
	if !v.inner {
		appendValue(v.buf, out.String(), false)
	}
	return err
}

// object writes {k=v,...}; only inside brackets (at the top of a line
// objects are flattened).
func (v valueWriter) object(marshal func(*objectWriter) error) error {
	v.buf.AppendByte('{')
	err := marshal(&objectWriter{buf: v.buf, start: v.buf.Len(), inner: true})
	v.buf.AppendByte('}')
	return err
}

// json writes the JSON value that begins with tok.
func (v valueWriter) json(tok json.Token, dec *json.Decoder) error {
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return v.object(func(o *objectWriter) error { return o.jsonMembers(dec) })
		}
		return v.array(func(a *arrayWriter) error {
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return err
				}
				if err := a.next().json(tok, dec); err != nil {
					return err
				}
			}
			_, err := dec.Token() // ']'
			return err
		})
	case string:
		v.str(t)
	case json.Number:
		v.buf.AppendString(string(t))
	case bool:
		v.buf.AppendBool(t)
	case nil:
		v.buf.AppendString("null")
	}
	return nil
}

// bare tells the bytes a value may hold unquoted: printable ASCII but
// space, '"', '=' and '\'; bareInner also without ",[]{}", the
// separators of arrays and objects.
var bare, bareInner = func() (t, inner [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = c != '"' && c != '=' && c != '\\'
		inner[c] = t[c] && c != ',' && c != '[' && c != ']' && c != '{' && c != '}'
	}
	return t, inner
}()

// appendValue writes s as a logfmt value: as it is when it can be, else
// quoted and escaped.
func appendValue(b *buffer.Buffer, s string, inner bool) {
	t := &bare
	if inner {
		t = &bareInner
	}
	i := 0
	for i < len(s) && t[s[i]] {
		i++
	}
	if i == len(s) && s != "" {
		b.AppendString(s)
		return
	}
	if s != "" && !mustQuote(s[i:], t) { // printable runes beyond ASCII
		b.AppendString(s)
		return
	}
	b.AppendByte('"')
	appendEscaped(b, s, true)
	b.AppendByte('"')
}

// mustQuote reports whether s holds a byte t does not allow, beyond
// runes that print.
func mustQuote(s string, t *[256]bool) bool {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if !t[c] {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !unicode.IsPrint(r) {
			return true
		}
		i += n
	}
	return false
}

// appendEscaped writes s with every control character, invalid UTF-8
// byte and non-printing rune escaped as Go does; quoted, '"' and '\' too.
func appendEscaped(b *buffer.Buffer, s string, quoted bool) {
	from := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != 0x7f && !(quoted && (c == '"' || c == '\\')) {
				i++
				continue
			}
			b.AppendString(s[from:i])
			switch c {
			case '"', '\\':
				b.AppendByte('\\')
				b.AppendByte(c)
			case '\n':
				b.AppendString(`\n`)
			case '\r':
				b.AppendString(`\r`)
			case '\t':
				b.AppendString(`\t`)
			default:
				appendHex(b, `\x`, uint32(c), 2)
			}
			i++
			from = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.AppendString(s[from:i])
			appendHex(b, `\x`, uint32(c), 2)
		case !unicode.IsPrint(r):
			b.AppendString(s[from:i])
			if r > 0xffff {
				appendHex(b, `\U`, uint32(r), 8)
			} else {
				appendHex(b, `\u`, uint32(r), 4)
			}
		default:
			i += n
			continue
		}
		i += n
		from = i
	}
	b.AppendString(s[from:])
}

func appendHex(b *buffer.Buffer, escape string, v uint32, digits int) {
	b.AppendString(escape)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b.AppendByte("0123456789abcdef"[v>>shift&0xf])
	}
}

// appendKey writes a key, or a namespace's prefix; a byte that a value
// would have to quote is written as '_', so a key stays one word.
func appendKey(b *buffer.Buffer, k string) {
	for i := 0; i < len(k); i++ {
		if !bare[k[i]] {
			for i := 0; i < len(k); i++ {
				if c := k[i]; bare[c] {
					b.AppendByte(c)
				} else {
					b.AppendByte('_')
				}
			}
			return
		}
	}
	b.AppendString(k)
}
