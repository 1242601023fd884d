package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestACLSemantics: umask applies without a default ACL; a default ACL is
// inherited (and the umask ignored); setfacl changes the mode; chmod
// changes the ACL mask. Both with the ACLs passing through to us as
// xattrs (a mount only its owner enters) and with the kernel's ACL
// support (AllowOther), which also enforces them.
func TestACLSemantics(t *testing.T) {
	for _, allowOther := range []bool{false, true} {
		t.Run(map[bool]string{false: "owner only", true: "allow other"}[allowOther], func(t *testing.T) {
			testACLSemantics(t, allowOther)
		})
	}
}

func testACLSemantics(t *testing.T, allowOther bool) {
	mnt := mountTestStaging(t, "acl", allowOther)
	mode := func(p string) string {
		t.Helper()
		return strings.TrimSpace(run(t, "stat", "-c", "%a", filepath.Join(mnt, p)))
	}
	run(t, "sh", "-c", "cd "+mnt+" && umask 027 && touch f && mkdir d")
	if got := mode("f"); got != "640" {
		t.Errorf("file with umask 027: mode %s, want 640", got)
	}
	if got := mode("d"); got != "750" {
		t.Errorf("dir with umask 027: mode %s, want 750", got)
	}

	run(t, "setfacl", "-d", "-m", "u:1234:rwx", filepath.Join(mnt, "d"))
	run(t, "sh", "-c", "cd "+mnt+"/d && umask 077 && touch g && mkdir sub")
	if got := mode("d/g"); got != "660" {
		t.Errorf("file under default ACL: mode %s, want 660 (umask ignored)", got)
	}
	if out := run(t, "getfacl", "-n", filepath.Join(mnt, "d", "g")); !strings.Contains(out, "user:1234:rwx") {
		t.Errorf("file did not inherit the default ACL:\n%s", out)
	}
	if out := run(t, "getfacl", "-n", filepath.Join(mnt, "d", "sub")); !strings.Contains(out, "default:user:1234:rwx") {
		t.Errorf("directory did not inherit the default ACL as its default:\n%s", out)
	}

	run(t, "setfacl", "-m", "u:99:rw,m::rw", filepath.Join(mnt, "f"))
	if got := mode("f"); got != "660" {
		t.Errorf("after setfacl m::rw: mode %s, want 660", got)
	}
	if err := os.Chmod(filepath.Join(mnt, "f"), 0o604); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "getfacl", "-n", filepath.Join(mnt, "f")); !strings.Contains(out, "mask::---") {
		t.Errorf("chmod 604 did not set the mask to ---:\n%s", out)
	}

	if !allowOther {
		return
	}
	// The kernel enforces ACLs for other users: nobody may read a 0600
	// file an ACL entry opens to it, and not its twin without one.
	openToOthers(t, mnt)
	for _, name := range []string{"open", "closed"} {
		if err := os.WriteFile(filepath.Join(mnt, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "setfacl", "-m", "u:65534:r", filepath.Join(mnt, "open"))
	for name, wantOK := range map[string]bool{"open": true, "closed": false} {
		err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(mnt, name)).Run()
		if (err == nil) != wantOK {
			t.Errorf("nobody reading %s: err %v, want success %v", name, err, wantOK)
		}
	}
}
