package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets a test run this test binary as lab itself (LAB_TEST_RUN_MAIN=1): the real
// command, flags, logging and exit status, without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("LAB_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// The relay serves whoever presents the token: a token file other users can read gets
// one warning line on stderr, and the relay still runs.
func TestRelayTokenFileWarning(t *testing.T) {
	for _, tt := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o604, true}, {0o644, true}} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			tok := filepath.Join(dir, "token")
			if err := os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tok, tt.mode); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "r.sock")
			cmd := exec.Command(os.Args[0], "relay", "--token-file", tok, "--listen", "unix:"+sock, "--fallback-dir", dir)
			cmd.Env = append(os.Environ(), "LAB_TEST_RUN_MAIN=1", "XDG_STATE_HOME="+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			cmd.Process.Signal(syscall.SIGTERM)
			err = cmd.Wait()
			if line != "lab relay: listening on unix:"+sock+"\n" || err != nil {
				t.Fatalf("relay: stdout %q, %v\nstderr: %s", line, err, stderr.String())
			}
			want := `level=WARN msg="relay: the token file is readable by other users, who can then run programs on this host through the relay; chmod 600 it" file=` +
				tok + " mode=" + tt.mode.String()
			var warnings []string
			for _, l := range strings.Split(stderr.String(), "\n") {
				if strings.Contains(l, "level=WARN") {
					_, rest, _ := strings.Cut(l, " ") // drop time=...
					warnings = append(warnings, rest)
				}
			}
			switch {
			case tt.warn && (len(warnings) != 1 || warnings[0] != want):
				t.Errorf("token file %v: warnings %q\nwant one: %s", tt.mode, warnings, want)
			case !tt.warn && len(warnings) != 0:
				t.Errorf("token file %v: unexpected warnings %q", tt.mode, warnings)
			}
		})
	}
}
