package dkim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mxdetour/mxdetour/internal/domain"
)

// The key directory
//
// [milter.dkim] key_dir holds key files named by key_file_template
// ("{domain}.{selector}.key", the name keygen gives them): each file so
// named is one key, as if it had a [[milter.dkim.keys]] row, read at start
// and at every reload. A hosting provider's new customer is then a new
// file and a reload. The rows of the configuration win over a file of the
// same domain and selector; a file is held to the rows' rules (mode,
// owner, key kinds) and, when it does not load, reported as a row is.

// Template is a key file name with {domain} and {selector} in it.
type Template struct {
	text   string
	re     *regexp.Regexp
	dFirst bool // {domain} comes before {selector}
}

// ParseTemplate reads a key_file_template. The selector in a file name is
// one label (no dot), so that "example.org.s1.key" has one reading; the
// domain is the rest.
func ParseTemplate(text string) (*Template, error) {
	di, si := strings.Index(text, "{domain}"), strings.Index(text, "{selector}")
	if di < 0 || si < 0 || strings.Count(text, "{domain}") != 1 || strings.Count(text, "{selector}") != 1 || strings.ContainsRune(text, '/') {
		return nil, fmt.Errorf("key_file_template %q must be a file name holding {domain} and {selector} once each", text)
	}
	var b strings.Builder
	b.WriteString("^")
	rest := text
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		switch {
		case strings.HasPrefix(rest, "{domain}"):
			b.WriteString(`(.+)`)
			rest = rest[len("{domain}"):]
		case strings.HasPrefix(rest, "{selector}"):
			b.WriteString(`([^.]+)`)
			rest = rest[len("{selector}"):]
		case i < 0:
			b.WriteString(regexp.QuoteMeta(rest))
			rest = ""
		case i == 0:
			b.WriteString(regexp.QuoteMeta("{"))
			rest = rest[1:]
		default:
			b.WriteString(regexp.QuoteMeta(rest[:i]))
			rest = rest[i:]
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("key_file_template %q: %w", text, err)
	}
	return &Template{text: text, re: re, dFirst: di < si}, nil
}

// Name is the file name of the key of domain and selector.
func (t *Template) Name(domainName, selector string) string {
	return strings.NewReplacer("{domain}", domainName, "{selector}", selector).Replace(t.text)
}

// Match reads the domain and selector from a file name.
func (t *Template) Match(name string) (domainName, selector string, ok bool) {
	m := t.re.FindStringSubmatch(name)
	if m == nil || m[1] == "" || m[2] == "" {
		return "", "", false
	}
	if t.dFirst {
		return m[1], m[2], true
	}
	return m[2], m[1], true
}

// DirRows lists the key files of dir whose names match the template, as
// rows, in file name order. Files whose names do not match, hidden files
// (a name starting with a dot, as editors and atomic writers use) and
// directories are not keys. The domain of a row is normalised when it
// can be; when it cannot, loading the row says why. Only a directory
// that cannot be read is an error.
func DirRows(dir, template string) ([]KeyRow, error) {
	if dir == "" {
		return nil, nil
	}
	tpl, err := ParseTemplate(template)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dkim key_dir: %w%s", err, ReadHint(dir, err))
	}
	var rows []KeyRow
	for _, e := range ents { // sorted by name
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		d, sel, ok := tpl.Match(e.Name())
		if !ok {
			continue
		}
		if n, err := domain.Normalize(d); err == nil {
			d = n
		}
		rows = append(rows, KeyRow{Domain: d, Selector: sel, KeyFile: filepath.Join(dir, e.Name())})
	}
	return rows, nil
}

// TableOptions say where the keys of the table come from ([milter.dkim]).
type TableOptions struct {
	Keys            []KeyRow // the configured rows, in order
	KeyDir          string   // a directory of key files; "" = none
	KeyFileTemplate string   // their names: {domain} and {selector}
	DefaultDomain   string   // signs mail of domains without keys of their own; "" = none
	// AllowGroupReadable accepts key files readable by their group (see
	// LoadTable).
	AllowGroupReadable bool
}

// Rows is the key table of c: its configured rows, then the
// files of key_dir that no row (nor an earlier file) names with the same
// domain and selector. fromDir is how many rows at the end came from
// key_dir. err says why key_dir could not be read (the rows are still
// returned).
func Rows(c TableOptions) (rows []KeyRow, fromDir int, err error) {
	found, err := DirRows(c.KeyDir, c.KeyFileTemplate)
	rows = slices.Clip(c.Keys)
	type id struct{ d, s string }
	have := map[id]bool{}
	for _, r := range c.Keys {
		d, _ := domain.Normalize(r.Domain)
		have[id{d, strings.ToLower(r.Selector)}] = true
	}
	for _, r := range found {
		k := id{r.Domain, strings.ToLower(r.Selector)}
		if have[k] {
			continue
		}
		have[k] = true
		rows = append(rows, r)
		fromDir++
	}
	return rows, fromDir, err
}

// Load builds the key table of c: its rows,
// the files of key_dir (see Rows) and the default domain. As with
// LoadTable, the table holds every key that loaded, and err joins what
// did not: each key (a *KeyError) and a key_dir that could not be read.
func Load(c TableOptions) (*Table, []string, error) {
	rows, fromDir, dirErr := Rows(c)
	t, warnings, err := loadTable(rows, len(rows)-fromDir, c.AllowGroupReadable)
	if d, nerr := domain.Normalize(c.DefaultDomain); nerr == nil {
		t.defaultDomain = d
	}
	if dirErr != nil {
		// Reported as a key that did not load, so the log, the metrics
		// and -check-config name it.
		t.rows = append(t.rows, row{cfg: KeyRow{KeyFile: c.KeyDir}, err: dirErr, state: Failed, dir: true, whole: true})
		t.dirErr = dirErr
		err = errors.Join(err, &KeyError{File: c.KeyDir, Err: dirErr})
	}
	return t, warnings, err
}
