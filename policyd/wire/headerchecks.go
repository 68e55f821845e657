package wire

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mxdetour/mxdetour/milter/pickup"
)

// The header_checks table wire creates for the limits: mail of the
// sendmail command (web scripts, cron) enters Postfix through pickup,
// which names the submitting account only in a Received: header Postfix
// never shows milters; pickup.HeaderChecks copies it into a header
// mxdetour-milter reads (and deletes), to count it against [[limits]].
const (
	headerChecksFile  = "mxdetour_header_checks"
	headerChecksEntry = "regexp:$config_directory/" + headerChecksFile
	headerChecksText  = "# mxdetour's header_checks table (regexp_table(5)), created by mxdetour-policyd wire\n" +
		"# and removed by unwire while unchanged. The line copies the account that ran the\n" +
		"# sendmail command (pickup's \"Received: by HOST (Postfix, from userid N)\") into a\n" +
		"# header mxdetour-milter reads, counts against [[limits]] and deletes. README,\n" +
		"# \"Web scripts: mail from the sendmail command\".\n" +
		pickup.HeaderChecks + "\n"
)

// headerChecks adds mxdetour's header_checks table, after the
// administrator's tables, where outbound limits are configured and the
// milter is wired (it deletes the header the table adds; without it the
// header would leave with the mail). A table of the administrator's that
// holds the line already (README's instructions by hand) does instead.
func (pl *planner) headerChecks() error {
	if !pl.w.Limits || pl.w.Milter == "" {
		return nil
	}
	path := filepath.Join(pl.p.confDir, headerChecksFile)
	cur, _, err := pl.current("header_checks")
	if err != nil {
		return err
	}
	mine := slices.Contains(splitList(cur), headerChecksEntry)
	if !mine {
		expanded, err := pl.expandParam("header_checks", cur)
		if err != nil {
			return err
		}
		for _, t := range splitList(expanded) {
			typ, file, _ := strings.Cut(strings.TrimPrefix(t, "proxy:"), ":")
			if (typ == "regexp" || typ == "pcre") && file != path && hasLine(file, pickup.HeaderChecks) {
				pl.note("header_checks already names %s, which holds mxdetour's line: left as it is", t)
				return pl.headerChecksSkipped()
			}
		}
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		pl.changes = append(pl.changes, &change{Kind: kindFile, Name: path, Table: "regexp:" + path,
			After: headerChecksText, Mode: 0o644,
			Why: "mxdetour's header_checks line: the account that ran the sendmail command, for [[limits]]"})
	case err != nil:
		return err
	case !hasLineIn(b, pickup.HeaderChecks):
		return ConfigError{fmt.Errorf("%s exists and lacks mxdetour's header_checks line (README, \"Web scripts\"): add the line to it, or remove it, then run this again", path)}
	}
	if err := pl.addToList("header_checks", headerChecksEntry, false); err != nil {
		return err
	}
	return pl.headerChecksSkipped()
}

// headerChecksSkipped notes where Postfix would skip header_checks for
// the mail of the sendmail command: receive_override_options with
// no_header_body_checks (main.cf's, or pickup's own -o), or a cleanup
// service with header_checks of its own.
func (pl *planner) headerChecksSkipped() error {
	over, _, err := pl.current("receive_override_options")
	if err != nil {
		return err
	}
	if slices.Contains(splitList(over), "no_header_body_checks") {
		pl.note("main.cf's receive_override_options has no_header_body_checks: header_checks are skipped, and mxdetour-milter cannot count the sendmail command's mail")
	}
	for _, s := range pl.st.services {
		switch s.program() {
		case "pickup":
			if slices.Contains(splitList(s.opts["receive_override_options"]), "no_header_body_checks") {
				pl.note("master.cf's %s has -o receive_override_options with no_header_body_checks: header_checks are skipped for the sendmail command's mail, which mxdetour-milter then cannot count", s.key())
			}
		case "cleanup":
			if v, ok := s.opts["header_checks"]; ok && !slices.Contains(splitList(v), headerChecksEntry) {
				pl.note("master.cf's %s has -o header_checks=%s of its own: where pickup's mail goes through it (cleanup_service_name), add %s there too", s.key(), quoteEmpty(v), headerChecksEntry)
			}
		}
	}
	return nil
}

// expandParam resolves $name references in a value of parameter name as
// Postfix would.
func (pl *planner) expandParam(name, v string) (string, error) {
	if !strings.Contains(v, "$") {
		return v, nil
	}
	out, err := pl.p.conf(pl.ctx, "-o", name+"="+v, "-xh", name)
	return strings.TrimSpace(out), err
}

// hasLine reports whether the file at path holds line as one of its lines.
func hasLine(path, line string) bool {
	if !filepath.IsAbs(path) {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && hasLineIn(b, line)
}

func hasLineIn(b []byte, line string) bool {
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}
