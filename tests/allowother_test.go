package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStagingAllowOther: a staging mount lets only the server's user in
// unless mounted with --allow-other; then other users get in, with the
// kernel checking permissions and ACLs. Revision mounts let everyone in.
func TestStagingAllowOther(t *testing.T) {
	r := newRepo(t)
	r.must("volume", "create", "home")
	// nobody must reach the mountpoints through the test's directories.
	for d := r.work; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	asNobody := func(args ...string) error {
		return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)...).Run()
	}
	stage := r.mkdir("mnt/stage")
	r.must("mount", "home", stage)
	if err := os.WriteFile(filepath.Join(stage, "public"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(stage, 0o755)
	if err := asNobody("cat", filepath.Join(stage, "public")); err == nil {
		t.Error("nobody read a file in a staging mount made without --allow-other")
	}
	r.must("commit", "home")
	r.must("umount", stage)

	r.must("mount", "--allow-other", "home", stage)
	if err := asNobody("cat", filepath.Join(stage, "public")); err != nil {
		t.Errorf("nobody cannot read a 0644 file in a staging mount made with --allow-other: %v", err)
	}
	if err := asNobody("touch", filepath.Join(stage, "new")); err == nil {
		t.Error("nobody created a file in a root-owned 0755 directory: permissions not checked")
	}
	sh(t, "setfacl", "-m", "u:65534:rwx", stage)
	if err := asNobody("touch", filepath.Join(stage, "new")); err != nil {
		t.Errorf("an ACL entry for nobody on the directory did not let it create a file: %v", err)
	}
	r.must("umount", stage)

	rev := r.mkdir("mnt/rev")
	r.must("mount", "home@latest", rev)
	defer r.must("umount", rev)
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(rev, "public")).CombinedOutput(); err != nil || !strings.Contains(string(out), "x") {
		t.Errorf("nobody reading a revision mount: %v: %s", err, out)
	}
}
