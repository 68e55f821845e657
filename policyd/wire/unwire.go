package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Unwire undoes what Wire recorded. A file (main.cf, master.cf) still as
// wire left it gets its original bytes back; one edited since is undone
// change by change with postconf, keeping the administrator's edits.
// Tables wire created go when unchanged and nothing names them any more.
// The record goes last.
func Unwire(ctx context.Context, o Options) error {
	out := o.out()
	p, err := newPostfix(ctx, o)
	if err != nil {
		return err
	}
	rec, err := loadRecord(p.confDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Postfix instance: %s\n", p.confDir)
	if rec == nil {
		fmt.Fprintf(out, "nothing to undo: there is no %s (wire never changed this instance, or unwire already undid it)\n", recordPath(p.confDir))
		return nil
	}
	u := &undoer{ctx: ctx, p: p, rec: rec, out: out, dry: o.DryRun}
	if o.DryRun {
		fmt.Fprintln(out, "dry run: these changes would be made:")
	}
	if err := u.run(); err != nil {
		return fmt.Errorf("%w\n%s is kept: run unwire again once that is fixed", err, recordPath(p.confDir))
	}
	if o.DryRun {
		fmt.Fprintln(out, "dry run: nothing was changed")
		return nil
	}
	if err := os.Remove(recordPath(p.confDir)); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s\n", recordPath(p.confDir))
	if u.changed && p.running(ctx) {
		if _, err := p.run(ctx, p.postfix, "reload"); err != nil {
			return err
		}
		fmt.Fprintln(out, "postfix reload: done")
	}
	return nil
}

type undoer struct {
	ctx     context.Context
	p       *postfix
	rec     *record
	out     io.Writer
	dry     bool
	changed bool
}

func (u *undoer) say(format string, a ...any) {
	fmt.Fprintf(u.out, "  "+format+"\n", a...)
}

// postconf runs one undoing postconf command (printed, and skipped in a
// dry run).
func (u *undoer) postconf(what string, args ...string) error {
	u.say("%s", what)
	if u.dry {
		return nil
	}
	u.changed = true
	_, err := u.p.conf(u.ctx, args...)
	return err
}

func (u *undoer) run() error {
	var restore []string
	byChange := map[string]bool{}
	for _, f := range cfFiles {
		o := u.rec.Files[f]
		path := filepath.Join(u.p.confDir, f)
		if o != nil && o.Original != nil && hashFile(path) == o.Wired {
			restore = append(restore, f)
		} else {
			byChange[f] = true
		}
	}
	if len(byChange) > 0 {
		st, err := u.p.read(u.ctx)
		if err != nil {
			return err
		}
		for i := len(u.rec.Changes) - 1; i >= 0; i-- {
			c := u.rec.Changes[i]
			if f := fileOf(c); byChange[f] {
				if err := u.undo(st, c); err != nil {
					return err
				}
			}
		}
		for _, f := range cfFiles {
			if byChange[f] {
				u.say("%s was edited after wire: undone change by change above, the later edits kept", f)
			}
		}
	}
	for _, f := range restore {
		u.say("%s: back to its bytes from before wire", f)
		if u.dry {
			continue
		}
		u.changed = true
		if err := writeAtomic(filepath.Join(u.p.confDir, f), u.rec.Files[f].Original, 0o644); err != nil {
			return err
		}
	}
	return u.tables()
}

// undo takes one change back, if what wire wrote is still there.
func (u *undoer) undo(st *state, c *change) error {
	switch c.Kind {
	case kindParam:
		cur, set := st.set[c.Name]
		return u.value(c, cur, set, "main.cf: "+c.Name, ", ",
			func(v string) []string { return []string{"-e", c.Name + "=" + v} },
			[]string{"-X", c.Name})
	case kindOption:
		i := strings.LastIndex(c.Name, "/")
		s := st.service(c.Name[:i])
		if s == nil {
			u.say("master.cf: %s is gone: nothing to undo for -o %s", c.Name[:i], c.Name[i+1:])
			return nil
		}
		cur, set := s.opts[c.Name[i+1:]]
		return u.value(c, cur, set, "master.cf: "+c.Name[:i]+" -o "+c.Name[i+1:], ",",
			func(v string) []string { return []string{"-P", c.Name + "=" + v} },
			[]string{"-PX", c.Name})
	case kindService:
		if st.service(c.Name) == nil {
			u.say("master.cf: service %s is already gone", c.Name)
			return nil
		}
		return u.postconf("master.cf: remove service "+c.Name, "-MX", c.Name)
	}
	return nil
}

// value undoes a parameter or option: a list loses the elements wire
// added (the administrator's later ones kept), a single value goes back
// to what it was if it is still wire's.
func (u *undoer) value(c *change, cur string, set bool, what, sep string, setArgs func(string) []string, unsetArgs []string) error {
	back := func() error {
		if c.Before == nil {
			return u.postconf(what+": remove (it was not set before wire)", unsetArgs...)
		}
		return u.postconf(what+" = "+quoteEmpty(*c.Before)+"  (as before wire)", setArgs(*c.Before)...)
	}
	if !set {
		u.say("%s: no longer set: left so", what)
		return nil
	}
	if len(c.Added) == 0 {
		if cur != c.After {
			u.say("%s = %s: changed since wire: kept", what, quoteEmpty(cur))
			return nil
		}
		return back()
	}
	rest, had := withoutEntries(cur, c.Added, sep)
	switch {
	case !had:
		u.say("%s: mxdetour's entries are no longer there: left so", what)
		return nil
	case c.Before == nil && strings.TrimSpace(rest) == "", c.Before != nil && sameList(rest, *c.Before):
		return back()
	}
	return u.postconf(what+" = "+quoteEmpty(rest)+"  (mxdetour's entries removed, the ones added since wire kept)", setArgs(rest)...)
}

// tables removes the tables wire created, where unchanged and no longer
// named by the configuration (as restored).
func (u *undoer) tables() error {
	var conf string
	for i := len(u.rec.Changes) - 1; i >= 0; i-- {
		c := u.rec.Changes[i]
		if c.Kind != kindFile && c.Kind != kindIndex {
			continue
		}
		src, index := c.Name, c.Index
		if c.Kind == kindIndex {
			src, index = "", c.Name
		}
		if src != "" {
			if b, err := os.ReadFile(src); err != nil || string(b) != c.After {
				u.say("%s: edited or gone since wire created it: kept", src)
				continue
			}
		} else if hashFile(index) != c.SHA256 {
			u.say("%s: rebuilt since wire built it: kept", index)
			continue
		}
		if u.dry {
			u.say("remove %s, which wire created, unless the restored configuration still names %s", strings.TrimSpace(src+" "+index), c.Table)
			continue
		}
		if conf == "" {
			var err error
			if conf, err = u.expandedConf(); err != nil {
				return err
			}
		}
		if path := c.Table[strings.Index(c.Table, ":")+1:]; referenced(conf, path) {
			u.say("%s: kept, though wire created it: the configuration still names %s, and Postfix defers mail while it is missing", strings.TrimSpace(src+" "+index), c.Table)
			continue
		}
		for _, f := range []string{src, index} {
			if f == "" {
				continue
			}
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			u.say("removed %s (wire created it)", f)
		}
	}
	return nil
}

// expandedConf is main.cf's settings and master.cf's options, with $name
// references resolved.
func (u *undoer) expandedConf() (string, error) {
	main, err := u.p.conf(u.ctx, "-n", "-x")
	if err != nil {
		return "", err
	}
	opts, err := u.p.conf(u.ctx, "-P", "-x")
	return main + opts, err
}
