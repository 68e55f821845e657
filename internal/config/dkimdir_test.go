package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The key directory, its file-name template and the default domain
// (issue #28).
func TestDKIMKeyDir(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"relative key_dir", "[milter.dkim]\nkey_dir = \"dkim\"\n",
			`x.toml:2: milter.dkim.key_dir: must be an absolute path (or "" for none)`},
		{"template without selector", "[milter.dkim]\nkey_file_template = \"{domain}.key\"\n",
			`x.toml:2: milter.dkim.key_file_template: "{domain}.key" must be a file name holding {domain} and {selector} once each, such as "{domain}.{selector}.key"`},
		{"template with a directory", "[milter.dkim]\nkey_file_template = \"{domain}/{selector}.key\"\n",
			`x.toml:2: milter.dkim.key_file_template: "{domain}/{selector}.key" must be a file name holding {domain} and {selector} once each, such as "{domain}.{selector}.key"`},
		{"default_domain", "[milter.dkim]\ndefault_domain = \"[192.0.2.1]\"\n",
			`x.toml:2: milter.dkim.default_domain: "[192.0.2.1]" is not a domain name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte(tc.in))
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(sortedLines(tc.want), sortedLines(err.Error())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	c, err := Parse("x.toml", []byte("[milter.dkim]\nkey_dir = \"/etc/mxdetour/dkim\"\nkey_file_template = \"{selector}.{domain}.pem\"\ndefault_domain = \"Hoster.ZZ.\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.Milter.DKIM.KeyDir, c.Milter.DKIM.KeyFileTemplate, c.Milter.DKIM.DefaultDomain}
	if diff := cmp.Diff([]string{"/etc/mxdetour/dkim", "{selector}.{domain}.pem", "hoster.zz"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if d := Default().Milter.DKIM; d.KeyDir != "" || d.KeyFileTemplate != "{domain}.{selector}.key" || d.DefaultDomain != "" {
		t.Errorf("defaults: %+v", d)
	}
}
