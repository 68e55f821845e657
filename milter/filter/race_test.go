//go:build race

package filter

func init() { eohPackets = 2000 }
