package postfix

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestOwnDomains reads a throwaway Postfix configuration with the real
// postconf and postmap: names with $parameters expanded, a file of
// names, a hash table's keys (not its address keys), each once.
func TestOwnDomains(t *testing.T) {
	t.Parallel()
	if _, err := Command("postconf"); err != nil {
		t.Skip("Postfix is not installed (Debian: postfix)")
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "relay_list")
	os.WriteFile(list, []byte("# ours\nRelayed.ZZ, other-relayed.zz\n"), 0o644)
	vmap := filepath.Join(dir, "vdomains")
	os.WriteFile(vmap, []byte("virtual-a.zz OK\nvirtual-b.zz OK\nuser@virtual-a.zz x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.cf"), nil, 0o644)
	if out, err := exec.Command("postmap", "-c", dir, "hash:"+vmap).CombinedOutput(); err != nil {
		t.Fatalf("postmap: %v\n%s", err, out)
	}
	main := "myhostname = h2.mxlab.zz\nmydomain = mxlab.zz\nmydestination = $myhostname, localhost.$mydomain, localhost\n" +
		"virtual_alias_domains = hash:" + vmap + "\nvirtual_mailbox_domains = h2.mxlab.zz\nrelay_domains = " + list + ", nosuch:table\n"
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644)
	got, skipped, err := OwnDomains(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{"h2.mxlab.zz", "localhost", "localhost.mxlab.zz", "other-relayed.zz", "relayed.zz", "virtual-a.zz", "virtual-b.zz"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("domains (-want +got):\n%s", d)
	}
	if len(skipped) != 1 {
		t.Errorf("skipped: %v, want the nosuch:table", skipped)
	}
}

// TestOwnDomainsBadDir: postconf's failure is an error, not an empty list.
func TestOwnDomainsBadDir(t *testing.T) {
	t.Parallel()
	if _, err := Command("postconf"); err != nil {
		t.Skip("Postfix is not installed (Debian: postfix)")
	}
	if _, _, err := OwnDomains(context.Background(), filepath.Join(t.TempDir(), "nonexistent")); err == nil {
		t.Error("no error for a configuration directory that does not exist")
	}
}
