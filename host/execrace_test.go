package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProofExecRace: a guest that can write to a share swaps a share file for a symlink to
// a program outside the shares while it launches it, 1000 times. The relay opens the file
// it checked and runs exactly that file, so nothing outside the shares ever runs (issue 9:
// the check and the exec by path were two steps, and the swap won 18 of 300 tries).
func TestProofExecRace(t *testing.T) {
	w := newWorld(t)
	outside := filepath.Join(w.root, "outside")
	raceDir := filepath.Join(w.hostShare, "race")
	for _, d := range []string{outside, raceDir, filepath.Join(w.guestShare, "race")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(outside, "escape"), "#!/bin/sh\necho outside\n")
	write(filepath.Join(raceDir, "prog"), "#!/bin/sh\necho inside\n")
	if err := os.Symlink(filepath.Join(outside, "escape"), filepath.Join(raceDir, "alt")); err != nil {
		t.Fatal(err)
	}
	// The guest's view: an ELF file (the interpreter's config has an elf format rule).
	if err := os.Link(bin.fixture, filepath.Join(w.guestShare, "race", "prog")); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	swapped := make(chan struct{})
	var swaps atomic.Int64
	go func() {
		defer close(swapped)
		prog, alt := filepath.Join(raceDir, "prog"), filepath.Join(raceDir, "alt")
		for {
			select {
			case <-stop:
				return
			default:
			}
			// One atomic exchange: prog is the script inside or the symlink out, in turn.
			if err := unix.Renameat2(unix.AT_FDCWD, prog, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("swap: %v", err)
				return
			}
			swaps.Add(1)
		}
	}()

	const tries, workers = 1000, 4
	var inside, escapes, refused atomic.Int64
	var mu sync.Mutex
	other := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tries / workers {
				out, errOut, code := output(t, w.interop(filepath.Join("..", "race", "prog"), "prog"), "")
				switch {
				case code == 0 && out == "inside\n":
					inside.Add(1)
				case strings.Contains(out, "outside"):
					escapes.Add(1)
				case code != 0 && out == "":
					refused.Add(1)
					mu.Lock()
					other[fmt.Sprintf("exit %d: %s", code, errOut)]++
					mu.Unlock()
				default:
					t.Errorf("exit %d stdout %q stderr %q", code, out, errOut)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-swapped
	t.Logf("%d tries, %d swaps: %d ran the share file, %d refused, %d escapes", tries, swaps.Load(), inside.Load(), refused.Load(), escapes.Load())
	for msg, n := range other {
		t.Logf("%d x %s", n, strings.TrimSpace(msg))
	}
	if escapes.Load() != 0 {
		t.Errorf("%d of %d launches ran a program outside the shares", escapes.Load(), tries)
	}
	if inside.Load() == 0 {
		t.Errorf("no launch ran the share file: the race was not exercised")
	}
}
