package wire

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Postfix does not fail open on a table: a transport_maps entry whose
// file is missing defers every message ("address resolver failure"), and
// `postfix check` says nothing about it (seen on Debian 12's Postfix 3.7:
// "open database /etc/postfix/transport.db: No such file or directory",
// then "status=deferred (address resolver failure)"). So wire never leaves a table it relies on missing: it creates an
// empty source, commented, and builds its index with postmap.

// The comments written into the tables wire creates; PATH is the file.
const (
	transportComment = "# Postfix transport table (transport(5)), created empty by mxdetour-policyd wire:\n" +
		"# transport_maps names it, and Postfix defers all mail while a table is missing.\n" +
		"# One line per domain: \"example.com  smtp:[mx.example.com]\"; then run: postmap PATH\n"
	saslComment = "# The relay's SMTP AUTH credentials (mxdetour [transports] relay = %q),\n" +
		"# created by mxdetour-policyd wire. One line, the nexthop exactly as the transport names it:\n" +
		"#   %s  user:password\n" +
		"# then run: postmap PATH\n"
)

// indexSuffix is the file postmap builds for a table type; "" for types
// read straight from their source (texthash, regexp, pcre, cidr ...).
var indexSuffix = map[string]string{"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}

// fileTypes are table types whose name is a file Postfix reads.
var fileTypes = []string{"hash", "btree", "lmdb", "cdb", "texthash", "regexp", "pcre", "cidr"}

// table plans what makes table spec usable: its source and index when
// both are missing, its index when only that is. Other table types are
// left alone, with a note when their file is missing.
func (pl *planner) table(spec, purpose, comment string, mode fs.FileMode) error {
	spec = strings.TrimPrefix(spec, "proxy:")
	typ, path, ok := strings.Cut(spec, ":")
	if !ok || !slices.Contains(fileTypes, typ) || !filepath.IsAbs(path) {
		return nil
	}
	for _, c := range pl.changes {
		if (c.Kind == kindFile || c.Kind == kindIndex) && c.Table == spec {
			return nil
		}
	}
	_, srcErr := os.Stat(path)
	if srcErr != nil && !errors.Is(srcErr, fs.ErrNotExist) {
		return srcErr
	}
	suffix := indexSuffix[typ]
	if suffix == "" {
		if srcErr != nil {
			pl.note("%s names %s, which does not exist: Postfix defers mail that needs it", purpose, spec)
		}
		return nil
	}
	index := path + suffix
	_, idxErr := os.Stat(index)
	if idxErr != nil && !errors.Is(idxErr, fs.ErrNotExist) {
		return idxErr
	}
	switch {
	case idxErr == nil:
		return nil
	case srcErr == nil:
		pl.changes = append(pl.changes, &change{Kind: kindIndex, Name: index, Table: spec,
			Why: purpose + " names it; its source was never postmap'ed"})
	default:
		pl.changes = append(pl.changes, &change{Kind: kindFile, Name: path, Table: spec, Index: index,
			After: strings.ReplaceAll(comment, "PATH", path), Mode: mode,
			Why: purpose + " names it, and Postfix defers mail while a table is missing"})
	}
	return nil
}

// referenced reports whether the instance's configuration still names
// path, in main.cf or in a master.cf -o option (both expanded).
func referenced(conf string, path string) bool {
	for i := 0; ; {
		j := strings.Index(conf[i:], path)
		if j < 0 {
			return false
		}
		end := i + j + len(path)
		if end == len(conf) || strings.ContainsRune(", \t\r\n}", rune(conf[end])) {
			return true
		}
		i = end
	}
}
