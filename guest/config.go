package guest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"lab/formats"
	"lab/share"
	"lab/wire"
)

// Defaults of the interpreter's configuration.
const (
	DefaultConfigPath       = "/etc/lab/interop.conf"
	DefaultTokenFile        = "/etc/lab/token"
	DefaultConnectTimeout   = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	// ConfigEnv names a config file to use instead of DefaultConfigPath.
	// It is honoured only for a file owned by the caller's uid (or root)
	// and writable by nobody else, so it can never make one user's
	// launches read another user's file (see LoadConfig).
	ConfigEnv = "LAB_INTEROP_CONFIG"
)

// DefaultRelay is the relay address when the config names none: the host
// (vsock CID 2) on the default port.
var DefaultRelay = "vsock:2:" + strconv.Itoa(wire.DefaultPort)

// Config is the interpreter's configuration, read from a root-owned file
// of `key = value` lines ('#' starts a comment):
//
//	relay             = vsock:2:5555          # or unix:/path/to/socket
//	token_file        = /etc/lab/token
//	share             = /mnt/host /home/me/share           # GUEST HOST [DRIVE]
//	drive             = C: /mnt/c                          # DRIVE GUEST (or C:/mnt/c)
//	format            = elf-arm64 0 7f454c460201 ffffffffffff   # NAME OFFSET MAGIC [MASK]
//	format            = jar .jar                               # NAME .EXTENSION
//	connect_timeout   = 30s
//	handshake_timeout = 10s
//	cwd_warning       = true     # the relay's "not in a shared folder" line on stderr
//
// Paths with spaces are written as Go-quoted strings ("...").
type Config struct {
	Relay            string        // "vsock:CID:PORT" or "unix:PATH"; zero: DefaultRelay
	TokenFile        string        // zero: DefaultTokenFile
	Shares           []Share       // guest path -> host path, for labpath (the relay has its own copy)
	Drives           []Drive       // Windows drive -> guest path (the Windows personality), for labpath
	Formats          []Format      // extra formats, tried after the built-in pe and host
	ConnectTimeout   time.Duration // zero: DefaultConnectTimeout
	HandshakeTimeout time.Duration // zero: DefaultHandshakeTimeout
	// CwdWarning makes launches ask the relay for its one-line warning on the program's
	// stderr when the cwd is not in a share (wire.LaunchCwdWarning). Provisioning sets it
	// from /etc/wsl.conf [lab] cwdWarning; off by default, as WSL prints nothing there.
	CwdWarning bool
}

// Share maps a guest directory (GuestPath, the 9p mount point) to a host directory
// (HostPath), with an optional Windows drive (Drive, "C:") for -w/-m under the Windows
// personality. It is lab's one share type; the guest reads only these three fields from
// its config (share = GUEST HOST [DRIVE]).
type Share = share.Share

// Drive maps a Windows drive letter to the guest directory that shows it, as WSL mounts C:
// at /mnt/c: under the Windows personality /mnt/c is the Wine prefix's drive_c. labpath -w/-m
// turn guest paths below Guest into DRIVE\... paths and -u turns DRIVE\... back, whether or
// not a share line names the host directory too.
type Drive struct {
	Letter string // "C:" (upper case)
	Guest  string // absolute guest path, e.g. "/mnt/c"
}

// Format is a configured format: a magic-number rule or a file name extension (the
// built-ins, formats.Builtin, are "host", wire.StubMagic, and "pe", magic MZ). The
// interpreter uses only the match; the runner is the relay's business.
type Format = formats.Format

// maxMagicEnd matches binfmt_misc: a magic must lie in the first 128 bytes.
const maxMagicEnd = 128

func (c *Config) setDefaults() {
	if c.Relay == "" {
		c.Relay = DefaultRelay
	}
	if c.TokenFile == "" {
		c.TokenFile = DefaultTokenFile
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
}

// maxConfig bounds the config file.
const maxConfig = 64 << 10

// ParseConfig reads a config (defaults applied). name is used in errors.
func ParseConfig(r io.Reader, name string) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfig+1))
	if err != nil {
		return nil, fmt.Errorf("guest: read %s: %w", name, err)
	}
	if len(data) > maxConfig {
		return nil, fmt.Errorf("guest: %s: larger than %d bytes", name, maxConfig)
	}
	c := &Config{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxConfig)
	for line := 1; sc.Scan(); line++ {
		if err := c.parseLine(sc.Text()); err != nil {
			return nil, fmt.Errorf("guest: %s:%d: %w", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("guest: %s: %w", name, err)
	}
	if _, _, err := ParseAddr(c.Relay); c.Relay != "" && err != nil {
		return nil, fmt.Errorf("guest: %s: %w", name, err)
	}
	c.setDefaults()
	return c, nil
}

func (c *Config) parseLine(s string) error {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' {
		return nil
	}
	key, val, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("expected `key = value`, got %q", s)
	}
	key = strings.TrimSpace(key)
	fields, err := splitFields(val)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	one := func() (string, error) {
		if len(fields) != 1 {
			return "", fmt.Errorf("%s takes one value, got %d", key, len(fields))
		}
		return fields[0], nil
	}
	switch key {
	case "relay":
		v, err := one()
		if err != nil {
			return err
		}
		c.Relay = v
	case "token_file":
		v, err := one()
		if err != nil {
			return err
		}
		if !path.IsAbs(v) {
			return fmt.Errorf("token_file must be an absolute path, got %q", v)
		}
		c.TokenFile = v
	case "connect_timeout", "handshake_timeout":
		v, err := one()
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s: want a positive duration like 5s, got %q", key, v)
		}
		if key == "connect_timeout" {
			c.ConnectTimeout = d
		} else {
			c.HandshakeTimeout = d
		}
	case "cwd_warning":
		v, err := one()
		if err != nil {
			return err
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("cwd_warning: want true or false, got %q", v)
		}
		c.CwdWarning = b
	case "share":
		sh, err := share.ParseConfValue(val)
		if err != nil {
			return err
		}
		c.Shares = append(c.Shares, sh)
	case "drive":
		var letter, guest string
		switch len(fields) {
		case 1: // C:/mnt/c
			if len(fields[0]) > 2 {
				letter, guest = fields[0][:2], fields[0][2:]
			}
		case 2:
			letter, guest = fields[0], fields[1]
		}
		if letter == "" {
			return fmt.Errorf("drive wants DRIVE GUEST (C: /mnt/c), got %d values", len(fields))
		}
		d := strings.ToUpper(letter)
		if len(d) != 2 || d[1] != ':' || d[0] < 'A' || d[0] > 'Z' {
			return fmt.Errorf("drive must look like C:, got %q", letter)
		}
		if !path.IsAbs(guest) {
			return fmt.Errorf("drive %s: the guest path must be absolute, got %q", d, guest)
		}
		for _, o := range c.Drives {
			if o.Letter == d {
				return fmt.Errorf("drive %s is mapped twice", d)
			}
		}
		c.Drives = append(c.Drives, Drive{Letter: d, Guest: path.Clean(guest)})
	case "format":
		if len(fields) == 2 && strings.HasPrefix(fields[1], ".") {
			f := Format{Name: fields[0], Extension: fields[1][1:]}
			if f.Name == "" || len(f.Name) > wire.MaxFormat || formats.IsBuiltin(f.Name) {
				return fmt.Errorf("format name %q is empty, too long or built in", f.Name)
			}
			if err := formats.CheckExtension(f.Extension); err != nil {
				return fmt.Errorf("format %s: %w", f.Name, err)
			}
			c.Formats = append(c.Formats, f)
			break
		}
		if len(fields) != 3 && len(fields) != 4 {
			return fmt.Errorf("format wants NAME OFFSET MAGIC [MASK] (magic and mask in hex) or NAME .EXTENSION, got %d values", len(fields))
		}
		f := Format{Name: fields[0]}
		if f.Name == "" || len(f.Name) > wire.MaxFormat || formats.IsBuiltin(f.Name) {
			return fmt.Errorf("format name %q is empty, too long or built in", f.Name)
		}
		off, err := strconv.Atoi(fields[1])
		if err != nil || off < 0 {
			return fmt.Errorf("format offset must be a number >= 0, got %q", fields[1])
		}
		f.Offset = off
		if f.Magic, err = hex.DecodeString(fields[2]); err != nil || len(f.Magic) == 0 {
			return fmt.Errorf("format magic must be non-empty hex, got %q", fields[2])
		}
		if len(fields) == 4 {
			if f.Mask, err = hex.DecodeString(fields[3]); err != nil || len(f.Mask) != len(f.Magic) {
				return fmt.Errorf("format mask must be hex as long as the magic, got %q", fields[3])
			}
		}
		if off > maxMagicEnd || off+len(f.Magic) > maxMagicEnd {
			return fmt.Errorf("format magic must lie in the first %d bytes", maxMagicEnd)
		}
		c.Formats = append(c.Formats, f)
	default:
		return fmt.Errorf("unknown key %q", key)
	}
	return nil
}

// splitFields splits a value into fields: the config's one syntax, which share lines use too
// (package share).
func splitFields(s string) ([]string, error) { return share.SplitFields(s) }

// ParseAddr splits a relay address: "unix:PATH" or "vsock:CID:PORT".
// It returns the network ("unix" or "vsock") and, for vsock, cid and port
// in addr as "CID:PORT".
func ParseAddr(a string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(a, ":")
	if !ok {
		return "", "", fmt.Errorf("relay address %q: want unix:PATH or vsock:CID:PORT", a)
	}
	switch network {
	case "unix":
		if addr == "" {
			return "", "", fmt.Errorf("relay address %q: empty socket path", a)
		}
		return network, addr, nil
	case "vsock":
		if _, _, err := vsockAddr(addr); err != nil {
			return "", "", fmt.Errorf("relay address %q: %w", a, err)
		}
		return network, addr, nil
	}
	return "", "", fmt.Errorf("relay address %q: unknown transport %q (want unix or vsock)", a, network)
}

func vsockAddr(s string) (cid, port uint32, err error) {
	c, p, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New("want CID:PORT")
	}
	ci, err1 := strconv.ParseUint(c, 10, 32)
	pi, err2 := strconv.ParseUint(p, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("CID and PORT must be numbers")
	}
	return uint32(ci), uint32(pi), nil
}

// MarshalText writes c in the config file syntax (for provisioning);
// ParseConfig reads it back to an equal Config.
func (c *Config) MarshalText() ([]byte, error) {
	var b strings.Builder
	q := share.QuoteField
	b.WriteString("# lab guest interop configuration (owned by root, not writable by others)\n")
	if c.Relay != "" {
		if _, _, err := ParseAddr(c.Relay); err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
		fmt.Fprintf(&b, "relay = %s\n", q(c.Relay))
	}
	if c.TokenFile != "" {
		fmt.Fprintf(&b, "token_file = %s\n", q(c.TokenFile))
	}
	for _, s := range c.Shares {
		fmt.Fprintf(&b, "share = %s\n", s.ConfValue())
	}
	for _, d := range c.Drives {
		fmt.Fprintf(&b, "drive = %s %s\n", d.Letter, q(d.Guest))
	}
	for _, f := range c.Formats {
		if f.Extension != "" {
			fmt.Fprintf(&b, "format = %s .%s\n", q(f.Name), f.Extension)
			continue
		}
		fmt.Fprintf(&b, "format = %s %d %x", q(f.Name), f.Offset, f.Magic)
		if f.Mask != nil {
			fmt.Fprintf(&b, " %x", f.Mask)
		}
		b.WriteByte('\n')
	}
	if c.ConnectTimeout != 0 {
		fmt.Fprintf(&b, "connect_timeout = %v\n", c.ConnectTimeout)
	}
	if c.HandshakeTimeout != 0 {
		fmt.Fprintf(&b, "handshake_timeout = %v\n", c.HandshakeTimeout)
	}
	if c.CwdWarning {
		b.WriteString("cwd_warning = true\n")
	}
	out := []byte(b.String())
	if _, err := ParseConfig(strings.NewReader(b.String()), "generated"); err != nil {
		return nil, err
	}
	return out, nil
}
