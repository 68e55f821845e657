package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
	"unicode/utf8"
)

// RecordName is the file in Postfix's config directory where wire keeps
// what unwire needs: main.cf and master.cf as they were before the first
// change, their SHA-256 as wire left them, and each change.
const RecordName = "mxdetour-wire.json"

// The kinds of change.
const (
	kindParam   = "param"   // a main.cf parameter: postconf -e / -X
	kindService = "service" // a master.cf entry: postconf -M / -MX
	kindOption  = "option"  // a master.cf -o option: postconf -P / -PX
	kindFile    = "file"    // a table source wire created, with its index
	kindIndex   = "index"   // an index wire built for the administrator's source
)

// change is one edit wire makes, and what undoes it.
type change struct {
	Kind   string      `json:"kind"`
	Name   string      `json:"name"`             // parameter; service/type; service/type/option; file path
	Before *string     `json:"before,omitempty"` // the earlier value; nil when none was set
	After  string      `json:"after"`            // the value (entry, file contents) wire wrote
	Added  []string    `json:"added,omitempty"`  // list elements wire added (list parameters)
	Table  string      `json:"table,omitempty"`  // files: the table as Postfix names it (hash:/etc/postfix/transport)
	Index  string      `json:"index,omitempty"`  // files: the index postmap built
	Mode   fs.FileMode `json:"mode,omitempty"`   // files
	SHA256 string      `json:"sha256,omitempty"` // files: the index's bytes as built
	Why    string      `json:"-"`
}

func (c *change) key() string { return c.Kind + " " + c.Name }

// record is the file RecordName.
type record struct {
	Version int       `json:"version"`
	Wired   time.Time `json:"wired"`
	// Files holds main.cf and master.cf as they were before the first
	// change, and their SHA-256 as wire last left them. Original is nil
	// when the file had been edited between two runs of wire: then only
	// change by change can undo.
	Files   map[string]*original `json:"files"`
	Changes []*change            `json:"changes"`
}

type original struct {
	Original []byte `json:"-"`
	Wired    string `json:"wired_sha256"`
}

// originalJSON keeps the original as text an administrator can read,
// unless it is not UTF-8 (JSON would not keep its bytes).
type originalJSON struct {
	Text   *string `json:"original,omitempty"`
	Base64 []byte  `json:"original_base64,omitempty"`
	Wired  string  `json:"wired_sha256"`
}

func (o *original) MarshalJSON() ([]byte, error) {
	j := originalJSON{Wired: o.Wired}
	switch {
	case o.Original == nil:
	case utf8.Valid(o.Original):
		t := string(o.Original)
		j.Text = &t
	default:
		j.Base64 = o.Original
	}
	return json.Marshal(j)
}

func (o *original) UnmarshalJSON(b []byte) error {
	var j originalJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	o.Wired, o.Original = j.Wired, j.Base64
	if j.Text != nil {
		o.Original = []byte(*j.Text)
	}
	return nil
}

// added returns the list elements earlier runs added to a parameter or
// option; nil on a nil record.
func (r *record) added(kind, name string) []string {
	if r == nil {
		return nil
	}
	for _, c := range r.Changes {
		if c.Kind == kind && c.Name == name {
			return c.Added
		}
	}
	return nil
}

// merge adds this run's changes: a key changed before keeps its first
// Before, so that unwire goes back to what was there before any wire.
func (r *record) merge(cs []*change) {
	for _, c := range cs {
		i := slices.IndexFunc(r.Changes, func(o *change) bool { return o.key() == c.key() })
		if i < 0 {
			r.Changes = append(r.Changes, c)
			continue
		}
		o := r.Changes[i]
		after := splitList(c.After)
		var added []string
		for _, a := range append(o.Added, c.Added...) {
			if slices.Contains(after, a) && !slices.Contains(added, a) {
				added = append(added, a)
			}
		}
		o.After, o.Added = c.After, added
	}
}

// addedService reports whether wire created service key (service/type).
func (r *record) addedService(key string) bool {
	if r == nil {
		return false
	}
	return slices.ContainsFunc(r.Changes, func(c *change) bool { return c.Kind == kindService && c.Name == key })
}

func recordPath(confDir string) string { return filepath.Join(confDir, RecordName) }

func loadRecord(confDir string) (*record, error) {
	b, err := os.ReadFile(recordPath(confDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", recordPath(confDir), err)
	}
	if r.Files == nil {
		r.Files = map[string]*original{}
	}
	return r, nil
}

// save writes the record atomically, readable by root only: it holds
// copies of main.cf and master.cf.
func (r *record) save(confDir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(recordPath(confDir), append(b, '\n'), 0o600)
}

// writeAtomic replaces path by data through a temporary file in the same
// directory; an existing file's mode and owner are kept.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		uid, gid = owner(fi)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// owner is a file's uid and gid, -1 when the system does not say.
func owner(fi fs.FileInfo) (int, int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}
