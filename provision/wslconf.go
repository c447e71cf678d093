package provision

import (
	"bufio"
	"fmt"
	"strings"
)

// WSLConfPath is the guest's WSL per-distribution configuration, read by provisioning as
// WSL's init reads it at start (lab's guest is provisioned after every boot).
const WSLConfPath = "/etc/wsl.conf"

// WSLConf is what provisioning takes from /etc/wsl.conf. Zero value: not the defaults; use
// DefaultWSLConf.
type WSLConf struct {
	// InteropEnabled is [interop] enabled (default true). false: the rules stay registered
	// but disabled, so a foreign file fails with "Exec format error" as users of WSL see it,
	// and WSL_INTEROP is not set (WSL creates no interop server then).
	InteropEnabled bool
	// AppendWindowsPath is [interop] appendWindowsPath (default true). false: no Windows
	// directories on the guest's PATH.
	AppendWindowsPath bool
	// CwdWarning is lab's own [lab] cwdWarning (default false): the relay writes its "not in a
	// shared folder" line on the program's stderr (WSL writes nothing of its own there).
	CwdWarning bool
	// Warnings are one line per value that was not understood (WSL warns and keeps the
	// default too).
	Warnings []string
}

// DefaultWSLConf is the configuration of a guest without /etc/wsl.conf.
func DefaultWSLConf() WSLConf {
	return WSLConf{InteropEnabled: true, AppendWindowsPath: true}
}

// ParseWSLConf reads wsl.conf's INI syntax as WSL does for the keys lab uses: [section]
// lines, key = value, '#' or ';' comments, names compared without regard to case, values
// optionally in double quotes, booleans true or false (any case; 1 and 0 too). Unknown
// sections and keys are ignored (they belong to WSL features lab does not have).
func ParseWSLConf(text string) WSLConf {
	c := DefaultWSLConf()
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: section header without ]", WSLConfPath, n))
				section = ""
				continue
			}
			section = strings.ToLower(strings.TrimSpace(line[1:end]))
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: expected key = value", WSLConfPath, n))
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.TrimSpace(val)
		if i := strings.IndexAny(val, "#;"); i >= 0 && !strings.HasPrefix(val, `"`) {
			val = strings.TrimSpace(val[:i])
		}
		val = strings.Trim(val, `"`)
		var dst *bool
		switch section + "." + key {
		case "interop.enabled":
			dst = &c.InteropEnabled
		case "interop.appendwindowspath":
			dst = &c.AppendWindowsPath
		case "lab.cwdwarning":
			dst = &c.CwdWarning
		default:
			continue
		}
		switch strings.ToLower(val) {
		case "true", "1":
			*dst = true
		case "false", "0":
			*dst = false
		default:
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: %s.%s: want true or false, got %q (the default is kept)", WSLConfPath, n, section, key, val))
		}
	}
	return c
}
