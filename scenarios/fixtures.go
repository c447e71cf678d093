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
	"strings"
)

//go:embed internal/labfix/*.go internal/labexec/*.go internal/labidle/*.go
var fixtureSrc embed.FS

// HostFixtures are the names under which labfix is exposed to the guest; each runs the
// labfix subcommand after "host-".
var HostFixtures = []string{
	"host-hello", "host-echo", "host-argv0", "host-cat", "host-streams", "host-exit",
	"host-kill", "host-yes", "host-gen", "host-sha256", "host-pwd", "host-env", "host-tty",
	"host-wait-signal", "host-sleep", "host-true",
}

// Fixtures are the built fixture programs.
type Fixtures struct {
	Dir     string            // holds labfix, its host-* links, labexec, labidle, hello.exe, exit3.exe
	Host    map[string]string // exposed name -> host path (the host-* links)
	LabExec string            // static guest program (GOOS=linux, the guest's GOARCH)
	LabIdle string            // static guest program: N idle vsock connections to the relay
	PE      []string          // Windows PE programs (see HelloPE); nil when not asked for
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
	src, err := os.MkdirTemp("", "lab-fixtures-src-")
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	defer os.RemoveAll(src)
	err = fs.WalkDir(fixtureSrc, "internal", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fixtureSrc.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(src, strings.TrimPrefix(p, "internal/"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module labfixtures\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	build := func(out, pkg string, env ...string) error {
		cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, "./"+pkg)
		cmd.Dir = src
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"), env...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scenarios: go build %s: %w: %s", pkg, err, strings.TrimSpace(errb.String()))
		}
		return nil
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
