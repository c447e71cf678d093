package host_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"lab/internal/labtest"
)

// bin holds the binaries built once for the whole package: the fixture host program
// (hard-linked under each of its names in fixtureDir), lab and lab-interop.
var bin struct {
	dir        string
	fixture    string // the fixture binary
	lab        string
	interop    string
	buildError error
}

// fixtureNames are the names the fixture answers to (see testdata/fixture).
var fixtureNames = []string{"echoargs", "cat", "sha256", "gen", "fill", "zeros", "exit", "killself", "tty", "waitsig",
	"produce", "sleeper", "sleeper-child", "orphan", "orphan-child", "interleave", "multicall", "true",
	"daemon", "daemon-child", "daemon-grandchild"}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

var buildOnce sync.Once

// buildBinaries builds the fixture, lab and lab-interop once per test process, on first use
// (fuzz workers that need none of them never build them).
func buildBinaries(t testing.TB) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lab-host-test-")
		if err != nil {
			bin.buildError = err
			return
		}
		bin.dir = dir
		bin.fixture = filepath.Join(dir, "fixture")
		bin.lab = filepath.Join(dir, "lab")
		bin.interop = filepath.Join(dir, "lab-interop")
		if err := labtest.GoBuild(bin.fixture, "./testdata/fixture", false); err != nil {
			bin.buildError = err
		} else if err := labtest.GoBuild(bin.lab, "lab/cmd/lab", raceEnabled); err != nil {
			bin.buildError = err
		} else if err := labtest.GoBuild(bin.interop, "lab/cmd/lab-interop", false); err != nil {
			bin.buildError = err
		}
	})
	if bin.buildError != nil {
		t.Fatalf("building the test binaries: %v", bin.buildError)
	}
}

// linkFixtures hard-links the fixture under each name into dir.
func linkFixtures(t testing.TB, dir string) {
	t.Helper()
	buildBinaries(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range fixtureNames {
		if err := os.Link(bin.fixture, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
}
