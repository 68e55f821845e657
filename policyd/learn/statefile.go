package learn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mxdetour/mxdetour/internal/statefile"
)

// The state file, PATH, is JSON (stateFile). Every write replaces it
// atomically (a temporary file in the same directory, fsynced, renamed
// over PATH, then the directory fsynced), and keeps the previous good copy
// as PATH.1. A file that cannot be read or parsed is set aside as
// PATH.corrupt-TIME and the previous copy is used instead.
//
// The daemon (user mxdetour) and `mxdetour-policyd blocks forget` (often
// root) both write it. Writers take an exclusive flock(2) on the directory
// for the whole read-merge-write, and a writer running as root gives the
// file the owner and group of its directory, so that a root run never
// leaves a file the daemon cannot replace.

// stateFile is the state file's content.
type stateFile struct {
	Version   int         `json:"version"`
	Offset    Offset      `json:"offset"`
	Journal   *JournalPos `json:"journal,omitempty"` // beside Offset: the source can change
	Blocks    []Block     `json:"blocks"`
	Forgotten []Forgotten `json:"forgotten,omitempty"`
}

const stateVersion = 1

// fileID tells one version of the state file from another: every write
// renames a new inode into place.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// statID returns the identity of the file at path; the zero fileID when
// there is none.
func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	return idOf(fi)
}

// errCorrupt marks a state file that was read but makes no sense.
var errCorrupt = errors.New("not a state file")

// readState reads and parses the state file at path.
func readState(path string) (*stateFile, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileID{}, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fileID{}, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fileID{}, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if st.Version != stateVersion {
		return nil, fileID{}, fmt.Errorf("%w: version %d, want %d", errCorrupt, st.Version, stateVersion)
	}
	return &st, idOf(fi), nil
}

// setAside renames a bad state file out of the way, keeping it for a
// person to look at; it returns the new name.
func setAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + now.UTC().Format("20060102T150405")
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s-%d", base, i)
	}
	return aside, os.Rename(path, aside)
}

// lockDir takes an exclusive flock(2) on dir, which serialises the
// writers of the state files in it across processes. The returned file
// is the directory, to fsync after a rename; closing it unlocks.
func lockDir(dir string) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return d, nil
}

// writeState writes data as the state file at path: temporary file,
// fsync, owner and mode, rename, fsync of dir. When keepPrevious, the
// file it replaces is kept as PATH.1 first; failing that (prevErr) does
// not stop the write. It returns the new file's identity.
func writeState(dir *os.File, path string, data []byte, keepPrevious bool) (id fileID, prevErr, err error) {
	tmp, err := statefile.WriteTemp(dir, ".state-*.tmp", data)
	if err != nil {
		return fileID{}, nil, err
	}
	defer os.Remove(tmp)
	if keepPrevious {
		if err := keepCopy(dir, path, path+".1"); err != nil {
			prevErr = fmt.Errorf("keeping the previous state file as %s.1: %w", path, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fileID{}, prevErr, err
	}
	if err := dir.Sync(); err != nil {
		return fileID{}, prevErr, fmt.Errorf("syncing %s: %w", dir.Name(), err)
	}
	return statID(path), prevErr, nil
}

// keepCopy replaces dst by the current content of src: a hard link when
// the file system allows, else a copy. A missing src is no error.
func keepCopy(dir *os.File, src, dst string) error {
	tmp := filepath.Join(dir.Name(), fmt.Sprintf(".state-prev-%d.tmp", os.Getpid()))
	os.Remove(tmp)
	err := os.Link(src, tmp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		data, rerr := os.ReadFile(src)
		if errors.Is(rerr, fs.ErrNotExist) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if tmp, err = statefile.WriteTemp(dir, ".state-*.tmp", data); err != nil {
			return err
		}
	}
	defer os.Remove(tmp)
	return os.Rename(tmp, dst)
}

// CheckStateFile reports, for -check-config, a state file the daemon
// could not write: its directory is missing or not a directory, or the
// path itself is a directory. The daemon would otherwise start and fail
// at its first save. The error names the key, learn.state_file.
func CheckStateFile(path string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("learn.state_file = %q: %s", path, fmt.Sprintf(format, args...))
	}
	if !filepath.IsAbs(path) {
		return bad("must be an absolute path")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return bad("directory %s does not exist; create it, writable by the daemon's user", dir)
	case err != nil:
		return fmt.Errorf("learn.state_file = %q: directory %s: %w", path, dir, err)
	case !fi.IsDir():
		return bad("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return bad("is a directory, not a file")
	}
	return nil
}
