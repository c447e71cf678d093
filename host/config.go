package host

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"lab/formats"
	"lab/host/proctree"
	"lab/internal/xdg"
	"lab/share"
	"lab/trace"
)

// Share maps a guest directory to the host directory it shows (a 9p share in the VM; lab's
// one share type). Guest paths at or under GuestPath map to the same relative path under
// HostPath (absolute; symlinks in it are resolved once by NewRelay). The relay ignores Tag,
// ReadOnly and Drive (9p enforces read-only in the guest; the relay runs files, it never
// writes; drives are the guest's path translation).
type Share = share.Share

// Exposed is a host command the guest may run by name (through a stub file in the guest).
type Exposed struct {
	Name     string // the name the guest uses, e.g. "notify-send"
	HostPath string // absolute path of the host program
}

// WineConfig configures the Wine runner used for PE (`MZ`) files.
type WineConfig struct {
	// Path of the wine loader. Zero: "wine" looked up in PATH at launch time, then
	// /usr/lib/wine/wine64.
	Path string
	// Prefix is the WINEPREFIX: an absolute directory owned by the relay's user, the lab's
	// own (never the user's ~/.wine). Zero: $XDG_STATE_HOME/lab/wine (or ~/.local/state/lab/wine).
	Prefix string
	// DLLOverrides is WINEDLLOVERRIDES. Zero: DefaultWineDLLOverrides.
	DLLOverrides string
	// WaitDelay bounds how long the relay keeps reading a Wine program's output after it
	// exited: Wine's background services inherit the first client's pipes. Zero: 500ms.
	WaitDelay time.Duration
}

// DefaultWineDLLOverrides skips the Mono and Gecko installers and disables the crash
// debugger, which would otherwise write a register dump to the program's stdout.
const DefaultWineDLLOverrides = "mscoree,mshtml=;winedbg.exe=d"

// Config configures a Relay. The zero value of every optional field is documented.
type Config struct {
	// Token is the shared secret every connection must present. Required (at least 16 bytes).
	Token []byte
	// Shares are the guest directories whose files may be run and in which the guest's
	// working directory maps to a host directory.
	Shares []Share
	// Allow lists the exposed host commands.
	Allow []Exposed
	// PeerCID, when non-zero, is the only vsock context ID accepted on vsock connections.
	// Connections whose peer is not vsock (Unix sockets) are not subject to it.
	PeerCID uint32
	// PeerCIDOf extracts the peer context ID of a vsock connection's remote address.
	// Zero: DefaultPeerCIDOf.
	PeerCIDOf func(net.Addr) (cid uint32, ok bool)
	// MaxSessions bounds concurrent authenticated sessions (running programs). While it is
	// reached, further authorised launches wait for a session to end (or the drain).
	// Zero: 256.
	MaxSessions int
	// MaxPending bounds connections that have not yet presented the token, apart from
	// MaxSessions, so that unauthenticated peers can never hold the slots real launches
	// need. When it is reached a new connection still gets its turn: the oldest pending
	// connection of the peer holding the most (per uid on Unix sockets, per CID on vsock) is
	// answered EAGAIN and closed. Zero: 64.
	MaxPending int
	// HelloTimeout bounds the time from accept to a valid token; a real interpreter sends
	// it at once (a guest under heavy TCG load may take seconds). Zero: 5s (at most HandshakeTimeout).
	HelloTimeout time.Duration
	// HandshakeTimeout bounds the time from accept to a complete, authorised launch request.
	// Zero: 10s (WSL's interop accept timeout).
	HandshakeTimeout time.Duration
	// DrainTimeout is how long Serve lets running sessions finish after its context ends
	// before it kills their process groups. Zero: 10s.
	DrainTimeout time.Duration
	// OutputDrain bounds how long the relay keeps reading a program's output after it exited
	// (descendants may hold the pipes). Zero: 2s. Wine uses WineConfig.WaitDelay.
	OutputDrain time.Duration
	// FallbackDir is the host working directory used when the guest's cwd is not in a
	// share (the launch proceeds with a one-line warning on the program's stderr).
	// Zero: the relay user's home directory, else "/".
	FallbackDir string
	// Env is the environment every host program starts from; the variables named by the
	// guest's LABENV are merged into it. Zero: the relay's own environment.
	Env []string
	// EnvAllow lists variables the guest may set although the built-in deny list (loader,
	// shell-startup, interpreter and plugin variables: see docs/DESIGN.md) names them: exact
	// names, or prefixes ending in "*". A launch whose LABENV sets a denied variable that is
	// not on this list is refused. Zero: nothing overrides the deny list.
	EnvAllow []string
	// Wine configures the runner for PE files.
	Wine WineConfig
	// Formats are executable formats beyond the built-in ones (lab file formats): a file
	// in a share that matches one (magic or extension) runs with its runner (exec, wine,
	// or an interpreter given by absolute host path). Zero: only pe and native files.
	Formats []formats.Format
	// Subreaper makes the relay's process the child subreaper and reaps the orphaned
	// descendants of host programs that the kernel then hands to it. Only for a process
	// whose children are all the relay's (lab relay); the reaper would otherwise reap
	// children other code in the process waits for.
	Subreaper bool
	// Procs, when set, holds every host program the relay starts and all their descendants
	// (a cgroup, or an environment marker), so that they die with the process that opened
	// it, SIGKILL included (see package proctree). Zero: programs are only in their own
	// process group, and a daemonised descendant outlives the relay.
	Procs *proctree.Tree
	// Logger receives one line per session event. Zero: slog.Default().
	Logger *slog.Logger
	// Trace records the steps of launches whose Launch carries a trace id (lab trace;
	// protocol 2.1) as JSON lines. Zero: no trace records (the ids still appear in the log).
	Trace *trace.Sink
}

// withDefaults validates c and returns a copy with defaults filled in and shares resolved.
func (c Config) withDefaults() (Config, error) {
	if len(c.Token) < 16 {
		return c, errors.New("host: the token must be at least 16 bytes (generate one with: head -c 32 /dev/urandom | base64)")
	}
	c.Token = append([]byte(nil), c.Token...)
	shares := make([]Share, 0, len(c.Shares))
	for _, s := range c.Shares {
		ns, err := resolveShare(s)
		if err != nil {
			return c, err
		}
		shares = append(shares, ns)
	}
	c.Shares = shares
	seen := map[string]bool{}
	allow := make([]Exposed, 0, len(c.Allow))
	for _, e := range c.Allow {
		if e.Name == "" || strings.ContainsAny(e.Name, "/\x00") || e.Name == "." || e.Name == ".." {
			return c, fmt.Errorf("host: exposed command name %q: must be a plain file name", e.Name)
		}
		if seen[e.Name] {
			return c, fmt.Errorf("host: exposed command %q listed twice", e.Name)
		}
		seen[e.Name] = true
		if !filepath.IsAbs(e.HostPath) {
			return c, fmt.Errorf("host: exposed command %s=%s: the host path must be absolute", e.Name, e.HostPath)
		}
		allow = append(allow, Exposed{Name: e.Name, HostPath: filepath.Clean(e.HostPath)})
	}
	c.Allow = allow
	if c.PeerCIDOf == nil {
		c.PeerCIDOf = DefaultPeerCIDOf
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 256
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 64
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = 5 * time.Second
	}
	c.HelloTimeout = min(c.HelloTimeout, c.HandshakeTimeout)
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.OutputDrain <= 0 {
		c.OutputDrain = 2 * time.Second
	}
	if c.FallbackDir == "" {
		if h, err := os.UserHomeDir(); err == nil && isDir(h) {
			c.FallbackDir = h
		} else {
			c.FallbackDir = "/"
		}
	}
	for _, n := range c.EnvAllow {
		if n == "" || n == "*" || strings.ContainsAny(n, "=\x00") {
			return c, fmt.Errorf("host: allowed variable %q: want a variable name, or a prefix ending in *", n)
		}
	}
	c.EnvAllow = append([]string(nil), c.EnvAllow...)
	if c.Env == nil {
		c.Env = os.Environ()
	}
	c.Env = append([]string(nil), c.Env...)
	if err := formats.ValidateTable(c.Formats); err != nil {
		return c, fmt.Errorf("host: %w", err)
	}
	c.Formats = slices.Clone(c.Formats)
	if c.Wine.DLLOverrides == "" {
		c.Wine.DLLOverrides = DefaultWineDLLOverrides
	}
	if c.Wine.WaitDelay <= 0 {
		c.Wine.WaitDelay = 500 * time.Millisecond
	}
	if c.Wine.Prefix == "" {
		state, err := xdg.Dir(xdg.State)
		if err != nil {
			return c, fmt.Errorf("host: no default wine prefix: %w", err)
		}
		c.Wine.Prefix = filepath.Join(state, "wine")
	}
	if !filepath.IsAbs(c.Wine.Prefix) {
		return c, fmt.Errorf("host: wine prefix %q must be an absolute path", c.Wine.Prefix)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func resolveShare(s Share) (Share, error) {
	if !filepath.IsAbs(s.GuestPath) {
		return s, fmt.Errorf("host: share %s:%s: the guest path must be absolute", s.HostPath, s.GuestPath)
	}
	if !filepath.IsAbs(s.HostPath) {
		return s, fmt.Errorf("host: share %s:%s: the host path must be absolute", s.HostPath, s.GuestPath)
	}
	real, err := filepath.EvalSymlinks(s.HostPath)
	if err != nil {
		return s, fmt.Errorf("host: share %s: %w", s.HostPath, err)
	}
	if !isDir(real) {
		return s, fmt.Errorf("host: share %s: not a directory", s.HostPath)
	}
	return Share{HostPath: real, GuestPath: filepath.Clean(s.GuestPath)}, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
