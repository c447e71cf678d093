package vsockdial_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNoKernelTimeoutDials keeps lab's programs off mdlayher/vsock's Dial, whose connect gives
// up after the kernel's 2 s default however long the caller would wait: the guest-side test
// and probe programs and the hostagent's kernel-vsock dialer must connect through this
// package (or, in the bench probe and the interpreter, their own copies of these few lines:
// the interpreter's, lab/guest.Conn, avoids package net).
func TestNoKernelTimeoutDials(t *testing.T) {
	dirs := []string{
		"../../guest",
		"../../scenarios/internal/labbench",
		"../../scenarios/internal/labidle",
		"../../scenarios/internal/labexec",
		"../../scenarios/internal/labfix",
		"../../vhostvsock/internal/guestprog",
		"../../vm",
	}
	call := regexp.MustCompile(`\bvsock\.Dial(Context)?\(`)
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s (%v): update the list", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(string(b), "\n") {
				if trimmed := strings.TrimSpace(line); !strings.HasPrefix(trimmed, "//") && call.MatchString(line) {
					t.Errorf("%s:%d dials with the kernel's 2 s connect timeout: %s", f, i+1, trimmed)
				}
			}
		}
	}
}
