//go:build !linux

package milter

import "net"

// withQuickAck returns c: TCP_QUICKACK is Linux's (see quickack_linux.go).
func withQuickAck(c net.Conn) net.Conn { return c }
