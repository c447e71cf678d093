// Package formats describes executable formats as data: how the guest recognises a file
// (a binfmt_misc magic with offset and mask, or a file name extension) and how the host
// runs it (directly, with Wine, through a host interpreter, or as an exposed command).
// The built-in formats (pe and host) are entries of the same table as the ones a lab file
// adds: the guest's interpreter detects with it, provisioning registers a binfmt rule per
// entry, and the relay picks the runner from it.
package formats

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"lab/wire"
)

// Kind is how the host runs a file of a format.
type Kind string

const (
	// Exec runs the host file itself (execve): ELF, #! scripts, anything the host kernel runs.
	Exec Kind = "exec"
	// Wine runs the file as `wine FILE ARGS...` in the VM's prefix (the pe format).
	Wine Kind = "wine"
	// Interpreter runs `COMMAND... FILE ARGS...` (e.g. python3, java -jar, qemu-aarch64-static).
	Interpreter Kind = "interpreter"
	// Exposed is the built-in host format: the file is a stub naming an allowed host command.
	Exposed Kind = "exposed"
)

// Runner says how the relay runs a file of the format.
type Runner struct {
	Kind Kind `json:"kind"`
	// Command is the interpreter's argv (Kind Interpreter only): an absolute host path,
	// then fixed arguments; the file's host path and the guest's arguments follow.
	Command []string `json:"command,omitempty"`
}

// Format is one executable format: a binfmt_misc match plus a host runner.
type Format struct {
	Name      string `json:"name"`                // Launch.Format, binfmt rule lab-NAME; [a-z0-9._-], at most 32 bytes
	Offset    int    `json:"offset,omitempty"`    // where Magic starts
	Magic     []byte `json:"magic,omitempty"`     // Offset+len(Magic) <= MaxMagicEnd; empty for an extension format
	Mask      []byte `json:"mask,omitempty"`      // nil: every bit of Magic counts
	Extension string `json:"extension,omitempty"` // without the dot, e.g. "jar"; set instead of Magic
	Runner    Runner `json:"runner"`
}

// MaxMagicEnd is binfmt_misc's limit: a magic lies in the first 128 bytes of the file.
const MaxMagicEnd = 128

// Names of the built-in formats (the wire's Launch.Format values).
const (
	PE   = wire.FormatPE
	Host = wire.FormatHost
)

// Builtin returns the built-in formats, in the order they are tried: exposed-command
// stubs (wire.StubMagic) and Windows PE files (MZ, run with Wine).
func Builtin() []Format {
	return []Format{
		{Name: Host, Magic: []byte(wire.StubMagic), Runner: Runner{Kind: Exposed}},
		{Name: PE, Magic: []byte("MZ"), Runner: Runner{Kind: Wine}},
	}
}

// IsBuiltin reports whether name is a built-in format's.
func IsBuiltin(name string) bool { return name == PE || name == Host }

// Matches reports whether a file named name (a path; only its base counts) whose first
// bytes are head is of format f.
func (f Format) Matches(name string, head []byte) bool {
	if f.Extension != "" {
		ext := filepath.Ext(name)
		return ext != "" && ext[1:] == f.Extension
	}
	if len(f.Magic) == 0 || f.Offset+len(f.Magic) > len(head) {
		return false
	}
	b := head[f.Offset : f.Offset+len(f.Magic)]
	if f.Mask == nil {
		return bytes.Equal(b, f.Magic)
	}
	for i := range b {
		if b[i]&f.Mask[i] != f.Magic[i]&f.Mask[i] {
			return false
		}
	}
	return true
}

// Detect returns the first format of table that matches, as binfmt_misc would pick one.
func Detect(table []Format, name string, head []byte) (Format, bool) {
	for _, f := range table {
		if f.Matches(name, head) {
			return f, true
		}
	}
	return Format{}, false
}

// Validate checks one configured (not built-in) format. Messages name the format; a lab
// file reports its own errors by key before formats reach this.
func (f Format) Validate() error {
	if err := CheckName(f.Name); err != nil {
		return err
	}
	if IsBuiltin(f.Name) {
		return fmt.Errorf("formats: %q is a built-in format's name", f.Name)
	}
	switch {
	case f.Extension != "" && len(f.Magic) != 0:
		return fmt.Errorf("formats: %s: give a magic or an extension, not both", f.Name)
	case f.Extension != "":
		if err := CheckExtension(f.Extension); err != nil {
			return fmt.Errorf("formats: %s: %w", f.Name, err)
		}
	case len(f.Magic) == 0:
		return fmt.Errorf("formats: %s: needs a magic or an extension", f.Name)
	case f.Offset < 0 || f.Offset+len(f.Magic) > MaxMagicEnd:
		return fmt.Errorf("formats: %s: the magic must lie within the first %d bytes", f.Name, MaxMagicEnd)
	case f.Mask != nil && len(f.Mask) != len(f.Magic):
		return fmt.Errorf("formats: %s: mask and magic differ in length", f.Name)
	}
	switch f.Runner.Kind {
	case Exec, Wine:
		if len(f.Runner.Command) != 0 {
			return fmt.Errorf("formats: %s: runner %s takes no command", f.Name, f.Runner.Kind)
		}
	case Interpreter:
		if len(f.Runner.Command) == 0 || !filepath.IsAbs(f.Runner.Command[0]) {
			return fmt.Errorf("formats: %s: the interpreter must be an absolute host path", f.Name)
		}
		for _, a := range f.Runner.Command {
			if strings.IndexByte(a, 0) >= 0 {
				return fmt.Errorf("formats: %s: the interpreter's arguments may not hold NUL", f.Name)
			}
		}
	default:
		return fmt.Errorf("formats: %s: runner %q: want exec, wine or interpreter", f.Name, f.Runner.Kind)
	}
	return nil
}

// ValidateTable checks configured formats: each valid, names unique.
func ValidateTable(table []Format) error {
	seen := map[string]bool{}
	for _, f := range table {
		if err := f.Validate(); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("formats: %s is defined twice", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

// CheckName checks a format's name: it becomes Launch.Format and the binfmt rule lab-NAME.
func CheckName(name string) error {
	if name == "" || len(name) > wire.MaxFormat-4 {
		return fmt.Errorf("formats: name %q: want 1 to %d characters", name, wire.MaxFormat-4)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("formats: name %q: only a-z, 0-9, '-', '_' and '.'", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("formats: name %q: not a name", name)
	}
	return nil
}

// CheckExtension checks a file name extension (without the dot), as binfmt_misc takes it.
func CheckExtension(ext string) error {
	if ext == "" || len(ext) > 32 || strings.ContainsAny(ext, "./:\\\x00 \t\n") {
		return errors.New("extension " + fmt.Sprintf("%q", ext) + ": want a word without '.', '/', ':' or spaces")
	}
	return nil
}

// RuleName is the binfmt_misc rule name of a configured format.
func RuleName(name string) string { return "lab-" + name }

// String describes the format for people: "labsh: *.labsh -> interpreter /bin/sh".
func (f Format) String() string {
	match := "*." + f.Extension
	if f.Extension == "" {
		match = fmt.Sprintf("magic %x", f.Magic)
		if f.Offset != 0 {
			match += fmt.Sprintf(" at %d", f.Offset)
		}
		if f.Mask != nil {
			match += fmt.Sprintf(" mask %x", f.Mask)
		}
	}
	run := string(f.Runner.Kind)
	if len(f.Runner.Command) > 0 {
		run += " " + strings.Join(f.Runner.Command, " ")
	}
	return fmt.Sprintf("%s: %s -> %s", f.Name, match, run)
}
