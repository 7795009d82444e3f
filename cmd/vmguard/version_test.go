package main

import (
	"os/exec"
	"regexp"
	"runtime/debug"
	"testing"
)

func TestVersionLine(t *testing.T) {
	stamp := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, c := range []struct {
		name, version string
		bi            *debug.BuildInfo
		want          string
	}{
		{"stamped", defaultVersion, &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: stamp("vcs.revision", "a7f7a9aa5d61", "vcs.time", "2026-12-02T03:27:42Z", "vcs.modified", "false")},
			"vmguard 0.1.0-dev commit a7f7a9aa5d61 (2026-12-02T03:27:42Z) go1.26.8"},
		{"modified tree", defaultVersion, &debug.BuildInfo{GoVersion: "go1.26.8",
			Settings: stamp("vcs.revision", "a7f7a9aa5d61", "vcs.modified", "true")},
			"vmguard 0.1.0-dev commit a7f7a9aa5d61 (modified) go1.26.8"},
		{"go install @version", defaultVersion, &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			"vmguard v1.2.3 commit unknown (no VCS stamp in this build) go1.26.8"},
		{"ldflags version wins", "2.0.0", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: stamp("vcs.revision", "abc")}, "vmguard 2.0.0 commit abc go1.26.8"},
		{"no build info", defaultVersion, nil, "vmguard 0.1.0-dev commit unknown"},
	} {
		if got := versionLine(c.version, c.bi); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestVersionFlag runs the built binary: --version prints the version, the
// commit (the one given with -ldflags -X main.commit when the build has no
// VCS stamp) and the Go version, and exits 0.
func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(vmguardBin, "--version").Output()
	if err != nil {
		t.Fatalf("vmguard --version: %v", err)
	}
	if !regexp.MustCompile(`^vmguard \S+ commit \S+.* go1\.\d+`).Match(out) {
		t.Errorf("vmguard --version printed %q", out)
	}
	bin := t.TempDir() + "/vmguard"
	if b, err := exec.Command("go", "build", "-buildvcs=false", "-ldflags", "-X main.version=9.9.9 -X main.commit=0123abcd", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	out, err = exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^vmguard 9\.9\.9 commit 0123abcd go1\.\d+`).Match(out) {
		t.Errorf("vmguard --version of a -ldflags build printed %q", out)
	}
}
