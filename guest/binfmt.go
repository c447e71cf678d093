package guest

import (
	"fmt"
	"strings"

	"lab/wire"
)

// Default install locations in the guest.
const (
	DefaultInterpreter = "/usr/local/lib/lab/interop"
	DefaultLabpath     = "/usr/local/bin/labpath" // a symlink to the interpreter
)

// Binfmt rule names, as they appear under /proc/sys/fs/binfmt_misc. The pe rule is WSL's
// WSLInterop by default (software written for WSL toggles it by that name); RulePE is its
// name when WSL's names are off.
const (
	RuleWSLInterop = "WSLInterop"
	RulePE         = "lab-pe"
	RuleHost       = "lab-host"
)

// BinfmtRules returns the binfmt_misc register strings for the built-in
// formats with interpreter interp. Flags: P keeps argv[0] (the
// interpreter gets `interp /full/path argv0 args...`), O passes the file
// open (AT_EXECFD: the interpreter reads its head without opening it again),
// F opens the interpreter at registration so the rules work in other mount
// namespaces and chroots (as WSL's rule does). Each string is written on its
// own to /proc/sys/fs/binfmt_misc/register.
func BinfmtRules(interp string, wslNames bool) ([]string, error) {
	if !strings.HasPrefix(interp, "/") || len(interp) > 127 || strings.ContainsAny(interp, ":\n") {
		return nil, fmt.Errorf("guest: interpreter path %q must be absolute, at most 127 bytes, without ':'", interp)
	}
	pe := RulePE
	if wslNames {
		pe = RuleWSLInterop
	}
	return []string{
		":" + pe + ":M::MZ::" + interp + ":POF",
		":" + RuleHost + ":M::" + binfmtEscape(wire.StubMagic) + "::" + interp + ":POF",
	}, nil
}

// binfmtEscape writes bytes binfmt_misc cannot take literally (':' is the
// delimiter, '\\' the escape, and non-printables) as \xNN.
func binfmtEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ':' || c == '\\' {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
