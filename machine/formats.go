package machine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"lab/formats"
	"lab/provision"
)

// FileFormats holds the VM's configured formats (a lab file's), JSON: a list of
// formats.Format. Provisioning registers a binfmt rule and an interop.conf format line per
// entry; the relay runs matching files with each entry's runner. lab up writes it
// (vm.Config.StateFiles) before the hostagent starts.
const FileFormats = "formats.json"

// EncodeFormats renders FileFormats.
func EncodeFormats(table []formats.Format) ([]byte, error) {
	if err := formats.ValidateTable(table); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	b, err := json.MarshalIndent(table, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	return append(b, '\n'), nil
}

// LoadFormats reads FileFormats; a missing file means no configured formats.
func LoadFormats(stateDir string) ([]formats.Format, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, FileFormats))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	var table []formats.Format
	if err := json.Unmarshal(b, &table); err != nil {
		return nil, fmt.Errorf("machine: %s: %w", FileFormats, err)
	}
	if err := formats.ValidateTable(table); err != nil {
		return nil, fmt.Errorf("machine: %s: %w", FileFormats, err)
	}
	return table, nil
}

// RulesOf are the binfmt rules of the VM whose state is in stateDir: the built-in ones and
// one per configured format.
func RulesOf(stateDir string) ([]provision.Rule, error) {
	table, err := LoadFormats(stateDir)
	if err != nil {
		return nil, err
	}
	// The pe rule under both of its names: whichever provisioning used (--no-wsl-names).
	return append(append(Rules(true), Rules(false)[0]), provision.FormatRules(table)...), nil
}

// formatLine is a format's line in interop.conf (package guest's syntax).
func formatLine(f formats.Format) string {
	if f.Extension != "" {
		return fmt.Sprintf("format = %s .%s\n", f.Name, f.Extension)
	}
	if f.Mask != nil {
		return fmt.Sprintf("format = %s %d %x %x\n", f.Name, f.Offset, f.Magic, f.Mask)
	}
	return fmt.Sprintf("format = %s %d %x\n", f.Name, f.Offset, f.Magic)
}
