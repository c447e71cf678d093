package scenarios

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
)

//go:embed internal/labfix/*.go internal/labexec/*.go internal/labidle/*.go
var fixtureSrc embed.FS

// probeSrc is lab bench's guest probe, embedded like the fixtures so that lab bench works
// from an installed lab binary, in any directory. Unlike the fixtures it imports
// x/crypto/ssh, so its go.mod and go.sum come along (as .txt: a go.mod would make the
// directory a module of its own); TestBenchProbeModule keeps them in step with lab's.
//
//go:embed internal/labbench/*.go internal/labbench/go.mod.txt internal/labbench/go.sum.txt
var probeSrc embed.FS

// HostFixtures are the names under which labfix is exposed to the guest; each runs the
// labfix subcommand after "host-".
var HostFixtures = []string{
	"host-hello", "host-echo", "host-argv0", "host-cat", "host-streams", "host-exit",
	"host-kill", "host-yes", "host-gen", "host-sha256", "host-pwd", "host-env", "host-tty",
	"host-wait-signal", "host-sleep", "host-true",
}

// Fixtures are the built fixture programs.
type Fixtures struct {
	Dir  string            // holds labfix, its host-* links, labexec, labidle, hello.exe, exit3.exe
	Host map[string]string // exposed name -> host path (the host-* links)
	// GuestLabfix is labfix built for the guest (static, GOOS=linux, the guest's GOARCH):
	// labfix itself when the host's architecture is the guest's.
	GuestLabfix string
	LabExec     string   // static guest program (GOOS=linux, the guest's GOARCH)
	LabIdle     string   // static guest program: N idle vsock connections to the relay
	PE          []string // Windows PE programs (see HelloPE); nil when not asked for
}

// BuildFixtures builds the fixture programs into dir with the Go toolchain (they are
// standard-library-only programs embedded in lab, so this works from an installed lab
// binary too). guestArch is the guest's GOARCH; windows adds hello.exe (prints "hello
// from the host", exit 0) and exit3.exe (exit 3), minimal PE files (HelloPE).
func BuildFixtures(ctx context.Context, dir, guestArch string, windows bool) (*Fixtures, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("scenarios: building the host fixtures needs the Go toolchain on PATH: %w", err)
	}
	src, err := writeModule(fixtureSrc, "labfixtures")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	build := func(out, pkg string, env ...string) error {
		return goBuild(ctx, goBin, src, out, pkg, env...)
	}
	f := &Fixtures{Dir: dir, Host: map[string]string{}}
	labfix := filepath.Join(dir, "labfix")
	if err := build(labfix, "labfix"); err != nil {
		return nil, err
	}
	for _, n := range HostFixtures {
		p := filepath.Join(dir, n)
		os.Remove(p)
		// Hard links, not symlinks: the name must survive a relay that resolves links.
		if err := os.Link(labfix, p); err != nil {
			return nil, fmt.Errorf("scenarios: %w", err)
		}
		f.Host[n] = p
	}
	f.GuestLabfix = labfix
	if guestArch != runtime.GOARCH || runtime.GOOS != "linux" {
		// The guest-native baselines need labfix in the guest's architecture too.
		f.GuestLabfix = filepath.Join(dir, "labfix-"+guestArch)
		if err := build(f.GuestLabfix, "labfix", "GOOS=linux", "GOARCH="+guestArch); err != nil {
			return nil, err
		}
	}
	f.LabExec = filepath.Join(dir, "labexec")
	if err := build(f.LabExec, "labexec", "GOOS=linux", "GOARCH="+guestArch); err != nil {
		return nil, err
	}
	f.LabIdle = filepath.Join(dir, "labidle")
	if err := build(f.LabIdle, "labidle", "GOOS=linux", "GOARCH="+guestArch); err != nil {
		return nil, err
	}
	if windows {
		for _, pe := range []struct {
			name string
			msg  string
			code uint32
		}{{"hello.exe", "hello from the host\n", 0}, {"exit3.exe", "exiting with 3\n", 3}} {
			b, err := HelloPE(pe.msg, pe.code)
			if err != nil {
				return nil, err
			}
			p := filepath.Join(dir, pe.name)
			if err := os.WriteFile(p, b, 0o755); err != nil {
				return nil, fmt.Errorf("scenarios: %w", err)
			}
			f.PE = append(f.PE, p)
		}
	}
	return f, nil
}

// guestPathOf maps a host path inside the share to the guest's view of it.
func guestPathOf(hostShare, guestShare, p string) (string, bool) {
	rel, err := filepath.Rel(hostShare, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return path.Join(guestShare, filepath.ToSlash(rel)), true
}

// BuildBenchProbe builds lab bench's guest probe (scenarios/internal/labbench, a static
// program for linux/guestArch) into out from the sources embedded in lab, so it needs the
// Go toolchain but not lab's source tree.
func BuildBenchProbe(ctx context.Context, out, guestArch string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("scenarios: building lab bench's guest probe needs the Go toolchain on PATH: %w", err)
	}
	src, err := writeModule(probeSrc, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("scenarios: %w", err)
	}
	// -mod=readonly: the embedded go.sum is complete, so nothing is looked up but the
	// modules themselves (from the module cache, or the proxy when not cached).
	return goBuild(ctx, goBin, src, out, "labbench", "GOOS=linux", "GOARCH="+guestArch, "GOFLAGS=-mod=readonly")
}

// writeModule writes the programs under internal/ in srcFS into a fresh temporary module
// (one directory per program) and returns its directory. The module is named name with
// no requirements, or, when name is "", srcFS holds its go.mod.txt and go.sum.txt.
func writeModule(srcFS embed.FS, name string) (string, error) {
	src, err := os.MkdirTemp("", "lab-module-src-")
	if err != nil {
		return "", fmt.Errorf("scenarios: %w", err)
	}
	err = fs.WalkDir(srcFS, "internal", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := srcFS.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(src, strings.TrimPrefix(p, "internal/"))
		if base := path.Base(p); base == "go.mod.txt" || base == "go.sum.txt" {
			dst = filepath.Join(src, strings.TrimSuffix(base, ".txt"))
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err == nil && name != "" {
		err = os.WriteFile(filepath.Join(src, "go.mod"), []byte("module "+name+"\n\ngo 1.22\n"), 0o644)
	}
	if err != nil {
		os.RemoveAll(src)
		return "", fmt.Errorf("scenarios: %w", err)
	}
	return src, nil
}

// goBuild builds the static program ./pkg of the module in src into out.
func goBuild(ctx context.Context, goBin, src, out, pkg string, env ...string) error {
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, "./"+pkg)
	cmd.Dir = src
	// env comes last so that a caller's GOFLAGS wins over the default.
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"), env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scenarios: go build %s: %w: %s", pkg, err, strings.TrimSpace(errb.String()))
	}
	return nil
}
