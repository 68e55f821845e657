package learn

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPostfixArgv(t *testing.T) {
	for _, tc := range []struct {
		postsuper, dir, name string
		args                 []string
		want                 []string
	}{
		{"/usr/bin/sudo -n /usr/sbin/postsuper", "/etc/postfix-out", "postsuper", []string{"-H", "ABC"},
			[]string{"/usr/bin/sudo", "-n", "/usr/sbin/postsuper", "-c", "/etc/postfix-out", "-H", "ABC"}},
		{"/usr/bin/sudo -n /usr/sbin/postsuper", "", "postqueue", []string{"-i", "ABC"},
			[]string{"/usr/sbin/postqueue", "-i", "ABC"}},
		{"", "/etc/postfix", "postqueue", []string{"-i", "ABC"}, nil},
	} {
		if diff := cmp.Diff(tc.want, PostfixArgv(tc.postsuper, tc.dir, tc.name, tc.args...)); diff != "" {
			t.Errorf("%q %s (-want +got):\n%s", tc.postsuper, tc.name, diff)
		}
	}
}
