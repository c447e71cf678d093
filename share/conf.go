package share

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode"
)

// The guest's interop config (/etc/lab/interop.conf, package guest) names shares in lines
// `share = GUEST HOST [DRIVE]`. ConfValue writes the value and ParseConfValue reads it: lab
// provisioning writes with the one, the guest's interpreter reads with the other. A value is
// fields separated by blanks; a field holding a blank, a quote, '#', a backslash or anything
// unprintable is Go-quoted (QuoteField, SplitFields), so any path survives the trip.

// ConfValue is s as interop.conf's share value: GUEST HOST, and DRIVE when s has one.
func (s Share) ConfValue() string {
	v := QuoteField(s.GuestPath) + " " + QuoteField(s.HostPath)
	if s.Drive != "" {
		v += " " + s.Drive
	}
	return v
}

// ParseConfValue reads a share value as ConfValue writes it: two absolute paths (cleaned)
// and an optional drive letter (C:, any case).
func ParseConfValue(v string) (Share, error) {
	fields, err := SplitFields(v)
	if err != nil {
		return Share{}, err
	}
	if len(fields) != 2 && len(fields) != 3 {
		return Share{}, fmt.Errorf("share wants GUEST HOST [DRIVE], got %d values", len(fields))
	}
	sh := Share{GuestPath: path.Clean(fields[0]), HostPath: fields[1]}
	if !path.IsAbs(sh.GuestPath) || !path.IsAbs(sh.HostPath) {
		return Share{}, fmt.Errorf("share paths must be absolute, got %q %q", fields[0], fields[1])
	}
	sh.HostPath = path.Clean(sh.HostPath)
	if len(fields) == 3 {
		d := strings.ToUpper(fields[2])
		if len(d) != 2 || d[1] != ':' || d[0] < 'A' || d[0] > 'Z' {
			return Share{}, fmt.Errorf("share drive must look like C:, got %q", fields[2])
		}
		sh.Drive = d
	}
	return sh, nil
}

// QuoteField returns s as one config field: as is when SplitFields reads it back so, else
// Go-quoted.
func QuoteField(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'`#\\") || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 || !strconv.CanBackquote(s) {
		return strconv.Quote(s)
	}
	return s
}

// SplitFields splits a config value on blanks; a field may be a Go-quoted string, and an
// unquoted '#' starts a comment.
func SplitFields(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] == '#' {
			return out, nil
		}
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("bad quoted string in %q", s)
			}
			v, _ := strconv.Unquote(q)
			out = append(out, v)
			s = s[len(q):]
			continue
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}
