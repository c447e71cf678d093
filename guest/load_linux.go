package guest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"

	"lab/wire"
)

// LoadConfig reads the interpreter's configuration: DefaultConfigPath,
// which must be owned by root and writable by nobody else; or, when
// getenv(ConfigEnv) names a file, that file, which must be owned by root
// or by the caller's effective uid and writable by nobody else. Another
// user's file is never read, so the variable cannot redirect anyone's
// launches but the caller's own (who could run anything anyway).
// It returns the config and the path it came from.
func LoadConfig(getenv func(string) string) (*Config, string, error) {
	name := DefaultConfigPath
	owners := []uint32{0}
	if p := getenv(ConfigEnv); p != "" {
		name = p
		owners = append(owners, uint32(os.Geteuid()))
	}
	f, err := openTrusted(name, owners, maxConfig)
	if err != nil {
		return nil, name, err
	}
	defer f.Close()
	c, err := ParseConfig(f, name)
	return c, name, err
}

// ReadToken reads the token file named by the config. The file must be
// owned by root (or the caller, for tests) and writable by nobody else;
// who may read it is the administrator's choice (docs/DESIGN.md: group
// `lab`). Surrounding white space is not part of the token.
func ReadToken(c *Config) ([]byte, error) {
	f, err := openTrusted(c.TokenFile, []uint32{0, uint32(os.Geteuid())}, wire.MaxToken+64)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, wire.MaxToken+64))
	if err != nil {
		return nil, fmt.Errorf("guest: read %s: %w", c.TokenFile, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > wire.MaxToken {
		return nil, fmt.Errorf("guest: token file %s holds %d bytes (want 1 to %d)", c.TokenFile, len(b), wire.MaxToken)
	}
	return b, nil
}

// openTrusted opens a regular file whose owner is one of owners and that
// no one else may write, checked on the open file (no race with a swap).
func openTrusted(name string, owners []uint32, max int64) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("guest: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("guest: %s is not a regular file", name)
	case fi.Size() > max:
		err = fmt.Errorf("guest: %s is larger than %d bytes", name, max)
	case fi.Mode().Perm()&0o022 != 0:
		err = fmt.Errorf("guest: %s is writable by group or others (mode %04o): refusing it (chmod go-w %s)", name, fi.Mode().Perm(), name)
	case st == nil || !ownedBy(st.Uid, owners):
		uid := -1
		if st != nil {
			uid = int(st.Uid)
		}
		err = fmt.Errorf("guest: %s is owned by uid %d, not root: refusing it", name, uid)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func ownedBy(uid uint32, owners []uint32) bool {
	for _, o := range owners {
		if uid == o {
			return true
		}
	}
	return false
}
