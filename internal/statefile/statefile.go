// Package statefile writes the small state files of mxdetour (learned
// blocks, sending-limit counters, DKIM rotation times) so that a crash or
// a power cut leaves either the old file or the new one, never a torn one:
// a temporary file in the same directory, fsynced, renamed over the old
// one, and the directory fsynced (rename(2) is atomic within a file
// system; the syncs make it durable).
//
// A file written by root — `mxdetour-policyd blocks forget` run from a
// root shell — gets the owner and group of its directory, so the daemon's
// own user can still read and replace it.
package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Mode is the mode of every state file: the daemon's user writes, its
// group (operators) reads.
const Mode = 0o640

// Write replaces the file at path with data.
func Write(path string, data []byte) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	tmp, err := WriteTemp(dir, "."+strings.TrimPrefix(filepath.Base(path), ".")+"-*.tmp", data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // gone after a successful rename; cleans up after a failed one
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return dir.Sync()
}

// WriteTemp writes data into a new file in dir (named after pattern, as
// os.CreateTemp does), synced, with Mode and dir's owner when we are root.
// It returns the file's name; the caller renames it into place.
func WriteTemp(dir *os.File, pattern string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir.Name(), pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	if err = f.Chmod(Mode); err == nil {
		err = chownLike(f, dir)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// chownLike gives f the owner and group of dir when we run as root (the
// only user allowed to); otherwise files get ours, which is the daemon's
// when the daemon writes.
func chownLike(f, dir *os.File) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := dir.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}
