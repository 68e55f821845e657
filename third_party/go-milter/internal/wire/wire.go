// Package wire includes constants and functions for the raw libmilter protocol
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

//go:generate go tool stringer -type=Code,ActionCode,ModifyActCode -output=wire_string.go

type Code byte

// Message represents a command sent from milter client
type Message struct {
	Code Code
	Data []byte
}

// MacroCode returns the Code this CodeMacro message is about.
// If the message is not a CodeMacro message, it returns the Code itself.
func (m *Message) MacroCode() Code {
	if m.Code == CodeMacro && len(m.Data) > 0 {
		return Code(m.Data[0])
	}
	return m.Code
}

type ActionCode byte

const (
	ActAccept    ActionCode = 'a' // SMFIR_ACCEPT
	ActContinue  ActionCode = 'c' // SMFIR_CONTINUE
	ActDiscard   ActionCode = 'd' // SMFIR_DISCARD
	ActReject    ActionCode = 'r' // SMFIR_REJECT
	ActTempFail  ActionCode = 't' // SMFIR_TEMPFAIL
	ActReplyCode ActionCode = 'y' // SMFIR_REPLYCODE
	ActSkip      ActionCode = 's' // SMFIR_SKIP [v6]
	ActProgress  ActionCode = 'p' // SMFIR_PROGRESS [v6]
)

type ModifyActCode byte

const (
	ActAddRcpt      ModifyActCode = '+' // SMFIR_ADDRCPT
	ActDelRcpt      ModifyActCode = '-' // SMFIR_DELRCPT
	ActReplBody     ModifyActCode = 'b' // SMFIR_ACCEPT
	ActAddHeader    ModifyActCode = 'h' // SMFIR_ADDHEADER
	ActChangeHeader ModifyActCode = 'm' // SMFIR_CHGHEADER
	ActInsertHeader ModifyActCode = 'i' // SMFIR_INSHEADER
	ActQuarantine   ModifyActCode = 'q' // SMFIR_QUARANTINE
	ActChangeFrom   ModifyActCode = 'e' // SMFIR_CHGFROM [v6]
	ActAddRcptPar   ModifyActCode = '2' // SMFIR_ADDRCPT_PAR [v6]
)

const (
	CodeOptNeg      Code = 'O' // SMFIC_OPTNEG
	CodeMacro       Code = 'D' // SMFIC_MACRO
	CodeConn        Code = 'C' // SMFIC_CONNECT
	CodeQuit        Code = 'Q' // SMFIC_QUIT
	CodeHelo        Code = 'H' // SMFIC_HELO
	CodeMail        Code = 'M' // SMFIC_MAIL
	CodeRcpt        Code = 'R' // SMFIC_RCPT
	CodeHeader      Code = 'L' // SMFIC_HEADER
	CodeEOH         Code = 'N' // SMFIC_EOH
	CodeBody        Code = 'B' // SMFIC_BODY
	CodeEOB         Code = 'E' // SMFIC_BODYEOB
	CodeAbort       Code = 'A' // SMFIC_ABORT
	CodeData        Code = 'T' // SMFIC_DATA
	CodeQuitNewConn Code = 'K' // SMFIC_QUIT_NC [v6]
	CodeUnknown     Code = 'U' // SMFIC_UNKNOWN [v6]
)

// We reject reading/writing messages larger than 512 MB outright.
const maxPacketSize = 512 * 1024 * 1024

// ErrEmptyPacket is returned when a packet's length is zero: every packet
// carries at least its command byte.
var ErrEmptyPacket = errors.New("milter: empty packet (length 0)")

// ErrPacketTooBig is returned (wrapped) when a packet announces more bytes
// than the reader accepts. Nothing was allocated for it.
var ErrPacketTooBig = errors.New("milter: packet too big")

// Limits bound the reading of one packet. A zero field means no limit
// (MaxSize: the hard maximum of 512 MB).
type Limits struct {
	// Idle bounds the wait for the first byte of the packet.
	Idle time.Duration
	// Packet bounds the time for the rest of the packet, counted from the
	// arrival of its first byte.
	Packet time.Duration
	// MaxSize is the largest length (command byte and data) accepted.
	MaxSize uint32
}

// maxSize is the largest packet l accepts.
func (l Limits) maxSize() uint32 {
	if l.MaxSize == 0 || l.MaxSize > maxPacketSize {
		return maxPacketSize
	}
	return l.MaxSize
}

// packetLength is the length a packet's prefix announces; an error for a
// length of zero or over maxSize, before anything is allocated.
func packetLength(prefix [4]byte, maxSize uint32) (uint32, error) {
	length := binary.BigEndian.Uint32(prefix[:])
	if length == 0 {
		return 0, ErrEmptyPacket
	}
	if length > maxSize {
		return 0, fmt.Errorf("%w: %d bytes announced, at most %d accepted", ErrPacketTooBig, length, maxSize)
	}
	return length, nil
}

// ReadPacket reads one packet, all of it within timeout (0: no timeout).
func ReadPacket(conn net.Conn, timeout time.Duration) (*Message, error) {
	if timeout != 0 {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		defer func(conn net.Conn) {
			_ = conn.SetReadDeadline(time.Time{})
		}(conn)
	}
	return readPacket(conn, maxPacketSize, nil)
}

// ReadPacketWithin reads one packet within the limits l. A packet that
// announces a length of zero or more than l.MaxSize is an error, and the
// connection must be closed: the stream cannot be resynchronised.
func ReadPacketWithin(conn net.Conn, l Limits) (*Message, error) {
	if l.Idle != 0 {
		_ = conn.SetReadDeadline(time.Now().Add(l.Idle))
	}
	defer func(conn net.Conn) {
		_ = conn.SetReadDeadline(time.Time{})
	}(conn)
	maxSize := l.maxSize()
	return readPacket(conn, maxSize, func() {
		var deadline time.Time
		if l.Packet != 0 {
			deadline = time.Now().Add(l.Packet)
		}
		_ = conn.SetReadDeadline(deadline)
	})
}

// readPacket reads a packet of at most maxSize bytes; started, if not nil,
// is called when its first byte has arrived.
func readPacket(conn net.Conn, maxSize uint32, started func()) (*Message, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(conn, prefix[:1]); err != nil {
		return nil, err
	}
	if started != nil {
		started()
	}
	if _, err := io.ReadFull(conn, prefix[1:]); err != nil {
		return nil, unexpectedEOF(err)
	}
	length, err := packetLength(prefix, maxSize)
	if err != nil {
		return nil, err
	}
	data, err := readData(conn, int(length))
	if err != nil {
		return nil, unexpectedEOF(err)
	}
	return &Message{Code: Code(data[0]), Data: data[1:]}, nil
}

// readData reads n bytes. Memory grows with what arrives, not with what
// the length prefix announced: a peer that announces much and sends
// little costs little.
func readData(r io.Reader, n int) ([]byte, error) {
	const step = 64 * 1024
	data := make([]byte, 0, min(n, step))
	for len(data) < n {
		if len(data) == cap(data) {
			data = slices.Grow(data, min(n-len(data), cap(data)))
		}
		m, err := io.ReadFull(r, data[len(data):min(n, cap(data))])
		data = data[:len(data)+m]
		if err != nil {
			return nil, err
		}
	}
	return data, nil
}

// unexpectedEOF turns an EOF in the middle of a packet into
// io.ErrUnexpectedEOF, so that callers do not take it for a clean close.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func WritePacket(conn net.Conn, msg *Message, timeout time.Duration) error {
	if msg == nil {
		return errors.New("msg nil pointer")
	}
	if timeout != 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		defer func(conn net.Conn) {
			_ = conn.SetWriteDeadline(time.Time{})
		}(conn)
	}
	hdr, err := header(msg)
	if err != nil {
		return err
	}
	// One writev for the prefix and the data, not two writes. No empty
	// write: on a synchronous conn (net.Pipe) it waits for a read.
	bufs := net.Buffers{hdr[:]}
	if len(msg.Data) > 0 {
		bufs = append(bufs, msg.Data)
	}
	_, err = bufs.WriteTo(conn)
	return err
}

// header is msg's length prefix and command byte.
func header(msg *Message) ([5]byte, error) {
	length := len(msg.Data) + 1
	if length > maxPacketSize {
		return [5]byte{}, fmt.Errorf("milter: cannot write %d bytes in one message", length)
	}
	return [5]byte{byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length), byte(msg.Code)}, nil
}

// PutPacket writes msg to w; the caller flushes.
func PutPacket(w *bufio.Writer, msg *Message) error {
	if msg == nil {
		return errors.New("msg nil pointer")
	}
	hdr, err := header(msg)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err = w.Write(msg.Data)
	return err
}

// IsModification reports whether code is a message modification
// (SMFIR_ADDHEADER ...): the MTA reads those only with the final
// response to the end of message, so they need not be sent at once.
func IsModification(code Code) bool {
	switch ModifyActCode(code) {
	case ActAddRcpt, ActDelRcpt, ActReplBody, ActAddHeader, ActChangeHeader, ActInsertHeader,
		ActQuarantine, ActChangeFrom, ActAddRcptPar:
		return true
	}
	return false
}

// PacketReader reads packets from a connection through a buffer: the
// length prefix, command byte and data of packets that arrived together
// (Postfix writes a macro packet and its command back to back) cost one
// system call, not three per packet. The limits hold as with
// ReadPacketWithin: a deadline is set whenever a read may wait.
type PacketReader struct {
	conn  net.Conn
	r     *bufio.Reader
	armed bool // a read deadline is set on conn
}

// NewPacketReader returns a PacketReader on conn.
func NewPacketReader(conn net.Conn) *PacketReader {
	return &PacketReader{conn: conn, r: bufio.NewReaderSize(conn, 16*1024)}
}

// deadline sets conn's read deadline to t, or clears it (t zero).
func (p *PacketReader) deadline(t time.Time) {
	if t.IsZero() && !p.armed {
		return
	}
	_ = p.conn.SetReadDeadline(t)
	p.armed = !t.IsZero()
}

// after is now+d, or zero (no deadline) when d is 0.
func after(d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// Read reads one packet within the limits l (see ReadPacketWithin).
func (p *PacketReader) Read(l Limits) (*Message, error) {
	maxSize := l.maxSize()
	if p.r.Buffered() == 0 {
		p.deadline(after(l.Idle))
	}
	first, err := p.r.ReadByte()
	if err != nil {
		return nil, err
	}
	var packetDeadline time.Time
	waitRest := func(need int) {
		if p.r.Buffered() >= need {
			return
		}
		if packetDeadline.IsZero() {
			packetDeadline = after(l.Packet)
		}
		p.deadline(packetDeadline)
	}
	var prefix [4]byte
	prefix[0] = first
	waitRest(3)
	if _, err := io.ReadFull(p.r, prefix[1:]); err != nil {
		return nil, unexpectedEOF(err)
	}
	length, err := packetLength(prefix, maxSize)
	if err != nil {
		return nil, err
	}
	waitRest(int(length))
	data, err := readData(p.r, int(length))
	if err != nil {
		return nil, unexpectedEOF(err)
	}
	return &Message{Code: Code(data[0]), Data: data[1:]}, nil
}

// AppendUint16 appends the big endian encoding of val to dest. It returns the new dest like append does.
func AppendUint16(dest []byte, val uint16) []byte {
	return append(dest, byte(val>>8), byte(val))
}
