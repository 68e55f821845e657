package logging

import (
	"sync"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// A console line's fields are written by fieldWriter when they are the
// common kinds (strings and booleans and integers in plain ASCII, and
// inline objects made of those) and the logger has no context of its own
// (With): then the line is zap's byte for byte, at a third of the cost of
// zap's JSON encoder, which clones itself, escapes byte by byte and is
// reached through an interface per field. Any other line, or a value
// that needs escaping, is left to zap whole.

// noContext tells, once per encoder, whether it has no fields of its own
// (With): zap's encoder is complete by the time it first encodes a line.
type noContext struct {
	once sync.Once
	yes  bool
}

func (n *noContext) of(enc zapcore.Encoder) bool {
	n.once.Do(func() {
		b, err := enc.EncodeEntry(zapcore.Entry{}, nil)
		if err == nil {
			n.yes = b.String() == zapcore.DefaultLineEnding
			b.Free()
		}
	})
	return n.yes
}

// fastLine writes e's message and fields after the head already in line
// (which ends in the separator), as zap's console encoder would; false when it cannot (line is then
// left to be freed).
func fastLine(line *buffer.Buffer, e zapcore.Entry, fields []zapcore.Field) bool {
	if e.Stack != "" || e.Caller.Defined || len(fields) == 0 {
		return false
	}
	for i := range fields {
		switch fields[i].Type {
		case zapcore.StringType, zapcore.BoolType, zapcore.Int64Type, zapcore.Int32Type, zapcore.Uint64Type,
			zapcore.InlineMarshalerType:
		default:
			return false
		}
	}
	line.AppendString(e.Message)
	line.AppendString("\t{")
	w := writers.Get().(*fieldWriter)
	w.buf, w.n, w.failed = line, 0, false
	for i := range fields {
		fields[i].AddTo(w)
	}
	ok := !w.failed && w.n > 0
	w.buf = nil
	writers.Put(w)
	if ok {
		line.AppendString("}" + zapcore.DefaultLineEnding)
	}
	return ok
}

var writers = sync.Pool{New: func() any { return new(fieldWriter) }}

// fieldWriter is the zapcore.ObjectEncoder of fastLine: the kinds it
// writes as zap's console context does ("key": value, separated by ", "),
// any other marks the line failed.
type fieldWriter struct {
	buf    *buffer.Buffer
	n      int
	failed bool
}

// plain reports whether s needs no JSON escaping: printable ASCII without
// quote or backslash, the bytes zap copies as they are.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !printable[s[i]] {
			return false
		}
	}
	return true
}

var printable = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (w *fieldWriter) key(k string) bool {
	if w.failed || !plain(k) {
		w.failed = true
		return false
	}
	if w.n > 0 {
		w.buf.AppendString(", ")
	}
	w.n++
	w.buf.AppendByte('"')
	w.buf.AppendString(k)
	w.buf.AppendString(`": `)
	return true
}

func (w *fieldWriter) AddString(k, v string) {
	if !plain(v) {
		w.failed = true
		return
	}
	if w.key(k) {
		w.buf.AppendByte('"')
		w.buf.AppendString(v)
		w.buf.AppendByte('"')
	}
}

func (w *fieldWriter) AddBool(k string, v bool) {
	if w.key(k) {
		w.buf.AppendBool(v)
	}
}

func (w *fieldWriter) AddInt64(k string, v int64) {
	if w.key(k) {
		w.buf.AppendInt(v)
	}
}

func (w *fieldWriter) AddInt(k string, v int)     { w.AddInt64(k, int64(v)) }
func (w *fieldWriter) AddInt32(k string, v int32) { w.AddInt64(k, int64(v)) }
func (w *fieldWriter) AddInt16(k string, v int16) { w.AddInt64(k, int64(v)) }
func (w *fieldWriter) AddInt8(k string, v int8)   { w.AddInt64(k, int64(v)) }

func (w *fieldWriter) AddUint64(k string, v uint64) {
	if w.key(k) {
		w.buf.AppendUint(v)
	}
}

func (w *fieldWriter) AddUint(k string, v uint)     { w.AddUint64(k, uint64(v)) }
func (w *fieldWriter) AddUint32(k string, v uint32) { w.AddUint64(k, uint64(v)) }
func (w *fieldWriter) AddUint16(k string, v uint16) { w.AddUint64(k, uint64(v)) }
func (w *fieldWriter) AddUint8(k string, v uint8)   { w.AddUint64(k, uint64(v)) }

// The other kinds are zap's to write.
func (w *fieldWriter) AddArray(string, zapcore.ArrayMarshaler) error   { w.failed = true; return nil }
func (w *fieldWriter) AddObject(string, zapcore.ObjectMarshaler) error { w.failed = true; return nil }
func (w *fieldWriter) AddBinary(string, []byte)                        { w.failed = true }
func (w *fieldWriter) AddByteString(string, []byte)                    { w.failed = true }
func (w *fieldWriter) AddComplex128(string, complex128)                { w.failed = true }
func (w *fieldWriter) AddComplex64(string, complex64)                  { w.failed = true }
func (w *fieldWriter) AddDuration(string, time.Duration)               { w.failed = true }
func (w *fieldWriter) AddFloat64(string, float64)                      { w.failed = true }
func (w *fieldWriter) AddFloat32(string, float32)                      { w.failed = true }
func (w *fieldWriter) AddTime(string, time.Time)                       { w.failed = true }
func (w *fieldWriter) AddUintptr(string, uintptr)                      { w.failed = true }
func (w *fieldWriter) AddReflected(string, any) error                  { w.failed = true; return nil }
func (w *fieldWriter) OpenNamespace(string)                            { w.failed = true }
