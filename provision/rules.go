package provision

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// BinfmtDir is where the kernel's binfmt_misc file system is mounted in the guest.
const BinfmtDir = "/proc/sys/fs/binfmt_misc"

// Rule is one binfmt_misc registration of type M (magic): files whose bytes at Offset,
// ANDed with Mask, equal Magic are run as "Interpreter <path> <argv0> args..." (flag P).
type Rule struct {
	Name        string // rule name, the file /proc/sys/fs/binfmt_misc/<Name>
	Offset      int    // where Magic starts in the file
	Magic       []byte // at most 128 bytes from the start of the file, with Offset
	Mask        []byte // zero: all bits of Magic count
	Interpreter string // absolute guest path
	Flags       string // e.g. "POF": P keeps argv[0], O passes the file open, F opens the interpreter at registration
	// Extension, when set, makes a type E rule instead: files whose name ends in
	// ".Extension" (Offset, Magic and Mask are then unused).
	Extension string
}

// String is the registration string written to /proc/sys/fs/binfmt_misc/register and to
// /etc/binfmt.d/*.conf: ":name:M:offset:magic:mask:interpreter:flags". Printable bytes
// are written as they are (so the pe rule reads ":lab-pe:M::MZ::...:POF" as WSL's
// ":WSLInterop:M::MZ::/init:FP"); the delimiter, backslashes and anything else are \xNN.
func (r Rule) String() string {
	if r.Extension != "" {
		return fmt.Sprintf(":%s:E::%s::%s:%s", r.Name, escape([]byte(r.Extension)), r.Interpreter, r.Flags)
	}
	off := ""
	if r.Offset != 0 {
		off = strconv.Itoa(r.Offset)
	}
	return fmt.Sprintf(":%s:M:%s:%s:%s:%s:%s", r.Name, off, escape(r.Magic), escape(r.Mask), r.Interpreter, r.Flags)
}

func escape(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c > ' ' && c < 0x7f && c != ':' && c != '\\' && c != '\'' && c != '"' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, `\x%02x`, c)
		}
	}
	return sb.String()
}

// Validate checks the limits the kernel enforces, so a bad rule fails here with a reason
// instead of as EINVAL from the register file.
func (r Rule) Validate() error {
	switch {
	case r.Name == "" || strings.ContainsAny(r.Name, ":/ \n") || r.Name == "." || r.Name == ".." || r.Name == "register" || r.Name == "status":
		return fmt.Errorf("provision: binfmt rule name %q: must be a plain word without ':' or '/'", r.Name)
	case r.Extension != "" && (len(r.Magic) != 0 || strings.ContainsAny(r.Extension, "/.:\\\n")):
		return fmt.Errorf("provision: binfmt rule %s: extension %q: a word without '.', '/' or ':', and no magic", r.Name, r.Extension)
	case r.Extension == "" && len(r.Magic) == 0:
		return fmt.Errorf("provision: binfmt rule %s: empty magic", r.Name)
	case r.Offset < 0 || r.Offset+len(r.Magic) > 128:
		return fmt.Errorf("provision: binfmt rule %s: magic must lie within the first 128 bytes", r.Name)
	case len(r.Mask) != 0 && len(r.Mask) != len(r.Magic):
		return fmt.Errorf("provision: binfmt rule %s: mask and magic differ in length", r.Name)
	case !strings.HasPrefix(r.Interpreter, "/") || len(r.Interpreter) > 127:
		return fmt.Errorf("provision: binfmt rule %s: interpreter %q must be an absolute path of at most 127 bytes", r.Name, r.Interpreter)
	case strings.Trim(r.Flags, "POCF") != "":
		return fmt.Errorf("provision: binfmt rule %s: flags %q: only P, O, C and F are known to every kernel", r.Name, r.Flags)
	}
	if n := len(r.String()); n > 1920 {
		return fmt.Errorf("provision: binfmt rule %s: registration string is %d bytes, over the kernel's 1920", r.Name, n)
	}
	return nil
}

// RuleStatus is what the kernel reports in /proc/sys/fs/binfmt_misc/<name>.
type RuleStatus struct {
	Enabled     bool
	Interpreter string
	Flags       string // as the kernel prints them (order P, O, C, F)
	Offset      int
	Magic       []byte
	Mask        []byte // nil when the rule has no mask
	Extension   string // type E rules: the extension without its dot
}

// ParseRuleStatus parses the text of /proc/sys/fs/binfmt_misc/<name>:
//
//	enabled
//	interpreter /usr/local/lib/lab/interop
//	flags: PF
//	offset 0
//	magic 4d5a
func ParseRuleStatus(text string) (RuleStatus, error) {
	var st RuleStatus
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		key = strings.TrimSuffix(key, ":")
		seen[key] = true
		var err error
		switch key {
		case "enabled":
			st.Enabled = true
		case "disabled":
			st.Enabled = false
		case "interpreter":
			st.Interpreter = val
		case "flags":
			st.Flags = val
		case "offset":
			st.Offset, err = strconv.Atoi(val)
		case "magic":
			st.Magic, err = hex.DecodeString(val)
		case "mask":
			st.Mask, err = hex.DecodeString(val)
		case "extension":
			st.Extension = strings.TrimPrefix(val, ".")
		default:
			// Newer kernels may add lines; they do not change what we compare.
		}
		if err != nil {
			return st, fmt.Errorf("provision: binfmt status line %q: %w", line, err)
		}
	}
	if !seen["enabled"] && !seen["disabled"] || !seen["interpreter"] || !seen["magic"] && !seen["extension"] {
		return st, fmt.Errorf("provision: binfmt status %q: missing enabled/interpreter/magic lines", abbrev(text))
	}
	return st, nil
}

// Mismatch says how the kernel's view of the rule differs from r, or "" when it matches
// (the enabled state is not compared: lab interop on|off changes it).
func (r Rule) Mismatch(st RuleStatus) string {
	var diffs []string
	if st.Interpreter != r.Interpreter {
		diffs = append(diffs, fmt.Sprintf("interpreter %q, want %q", st.Interpreter, r.Interpreter))
	}
	if !sameFlags(st.Flags, r.Flags) {
		diffs = append(diffs, fmt.Sprintf("flags %q, want %q", st.Flags, r.Flags))
	}
	if st.Extension != r.Extension {
		diffs = append(diffs, fmt.Sprintf("extension %q, want %q", st.Extension, r.Extension))
	}
	if r.Extension != "" || st.Extension != "" {
		return strings.Join(diffs, "; ")
	}
	if st.Offset != r.Offset {
		diffs = append(diffs, fmt.Sprintf("offset %d, want %d", st.Offset, r.Offset))
	}
	if !slices.Equal(st.Magic, r.Magic) {
		diffs = append(diffs, fmt.Sprintf("magic %x, want %x", st.Magic, r.Magic))
	}
	if !slices.Equal(effectiveMask(st.Mask, len(st.Magic)), effectiveMask(r.Mask, len(r.Magic))) {
		diffs = append(diffs, fmt.Sprintf("mask %x, want %x", st.Mask, r.Mask))
	}
	return strings.Join(diffs, "; ")
}

func effectiveMask(m []byte, n int) []byte {
	if len(m) != 0 {
		return m
	}
	all := make([]byte, n)
	for i := range all {
		all[i] = 0xff
	}
	return all
}

func sameFlags(a, b string) bool {
	x, y := []byte(a), []byte(b)
	slices.Sort(x)
	slices.Sort(y)
	return string(x) == string(y)
}

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
