package provision

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"

	"lab/internal/fsutil"
)

// Files provisioning keeps in a VM's state directory.
const (
	// TokenFile holds the per-VM token: 64 hex characters, no newline, mode 0600. The
	// relay reads it; provisioning copies it to TokenPath in the guest.
	TokenFile = "interop.token"
	// ExposedFile is the allow list of exposed host commands, JSON [{Name, HostPath}].
	ExposedFile = "exposed.json"
)

// EnsureToken returns the VM's token, creating it (32 random bytes, hex) on first use.
// Both the relay and provisioning call it, so whichever runs first creates it.
func EnsureToken(stateDir string) ([]byte, error) {
	p := filepath.Join(stateDir, TokenFile)
	if b, err := os.ReadFile(p); err == nil {
		b = bytes.TrimSpace(b)
		if len(b) < 32 {
			return nil, fmt.Errorf("provision: token %s is too short; delete it and run lab provision to make a new one", p)
		}
		return b, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("provision: read token: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("provision: token: %w", err)
	}
	tok := []byte(hex.EncodeToString(raw))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // created concurrently: use that one
		return EnsureToken(stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("provision: create token: %w", err)
	}
	if _, err := f.Write(tok); err != nil {
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("provision: write token: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("provision: write token: %w", err)
	}
	return tok, nil
}

// LoadExposed reads the VM's allow list; a missing file is an empty list.
func LoadExposed(stateDir string) ([]Exposed, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, ExposedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	var list []Exposed
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("provision: %s: %w", filepath.Join(stateDir, ExposedFile), err)
	}
	return list, nil
}

// SaveExposed writes the allow list atomically (temp file + rename).
func SaveExposed(stateDir string, list []Exposed) error {
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if list == nil {
		b = []byte("[]")
	}
	if err := fsutil.WriteFile(filepath.Join(stateDir, ExposedFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	return nil
}

// AddExposed resolves each host program (a path, or a name looked up in the host's PATH)
// to an absolute path and adds it to list under its base name, or under as when exactly
// one program is given. An entry of the same name is replaced.
func AddExposed(list []Exposed, programs []string, as string) ([]Exposed, []Exposed, error) {
	if len(programs) == 0 {
		return nil, nil, errors.New("provision: expose: name at least one host program")
	}
	if as != "" && len(programs) != 1 {
		return nil, nil, errors.New("provision: expose: --as names one program; expose the others separately")
	}
	var added []Exposed
	for _, prog := range programs {
		hp, err := exec.LookPath(prog)
		if err != nil {
			return nil, nil, fmt.Errorf("provision: expose %s: %w", prog, err)
		}
		if hp, err = filepath.Abs(hp); err != nil {
			return nil, nil, fmt.Errorf("provision: expose %s: %w", prog, err)
		}
		name := filepath.Base(prog)
		if as != "" {
			name = as
		}
		if err := checkName(name); err != nil {
			return nil, nil, err
		}
		e := Exposed{Name: name, HostPath: hp}
		list = slices.DeleteFunc(list, func(x Exposed) bool { return x.Name == name })
		list = append(list, e)
		added = append(added, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, added, nil
}

// RemoveExposed drops the named entries (a guest name, or a host program's path or base
// name) and reports which it removed; naming nothing it knows is an error.
func RemoveExposed(list []Exposed, names []string) ([]Exposed, []Exposed, error) {
	var removed []Exposed
	for _, n := range names {
		found := false
		list = slices.DeleteFunc(list, func(x Exposed) bool {
			if x.Name == n || x.HostPath == n || filepath.Base(x.HostPath) == n {
				removed = append(removed, x)
				found = true
				return true
			}
			return false
		})
		if !found {
			return nil, nil, fmt.Errorf("provision: unexpose %s: not exposed (lab status lists what is)", n)
		}
	}
	return list, removed, nil
}
