package wire

import (
	"bytes"
	"fmt"
)

// StubMagic opens every exposed-host-command stub. The binfmt_misc rule for
// FormatHost matches it at offset 0 (binfmt_misc runs before the kernel's
// #! handling, so the rule wins over the shebang).
const StubMagic = "#!lab-host\n"

// MaxStub bounds the size of a stub file.
const MaxStub = 4096

// MaxStubName bounds the length of an exposed command's name.
const MaxStubName = 64

// FormatStub returns the stub file for the exposed host command name:
//
//	#!lab-host
//	NAME
//
// Running it in the guest asks the relay for the allowed host command
// NAME (Launch.Format "host", Launch.Path NAME).
func FormatStub(name string) ([]byte, error) {
	if err := CheckStubName(name); err != nil {
		return nil, err
	}
	return []byte(StubMagic + name + "\n"), nil
}

// ParseStub returns the command name of a stub file. Lines after the name
// that start with '#' are comments; anything else is an error.
func ParseStub(data []byte) (string, error) {
	if len(data) > MaxStub {
		return "", fmt.Errorf("wire: host command stub too large (%d bytes, limit %d)", len(data), MaxStub)
	}
	rest, ok := bytes.CutPrefix(data, []byte(StubMagic))
	if !ok {
		return "", fmt.Errorf("wire: not a host command stub (first line is not %q)", StubMagic[:len(StubMagic)-1])
	}
	line, rest, _ := bytes.Cut(rest, []byte("\n"))
	name := string(bytes.TrimSuffix(line, []byte("\r")))
	if err := CheckStubName(name); err != nil {
		return "", err
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(bytes.TrimSpace(line)) != 0 && line[0] != '#' {
			return "", fmt.Errorf("wire: host command stub for %q has extra content %q", name, truncate(line, 40))
		}
	}
	return name, nil
}

// CheckStubName accepts names of 1..MaxStubName bytes from [A-Za-z0-9._+-],
// not starting with '.' or '-' (so never a path, an option or "..").
func CheckStubName(name string) error {
	if name == "" {
		return fmt.Errorf("wire: host command stub without a command name")
	}
	if len(name) > MaxStubName {
		return fmt.Errorf("wire: host command name too long (%d bytes, limit %d)", len(name), MaxStubName)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("wire: host command name %q may not start with %q", name, name[0])
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '+' || c == '-') {
			return fmt.Errorf("wire: host command name %q has a character outside [A-Za-z0-9._+-]", truncate([]byte(name), 40))
		}
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
