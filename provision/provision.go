package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/pkg/sftp"

	"lab/formats"
	"lab/internal/shell"
	"lab/share"
)

// Guest is what provisioning needs from a running guest: a shell command runner and an
// SFTP client over the same kept SSH connection. *vm.Client satisfies it.
type Guest interface {
	// Run runs cmd with the guest's /bin/sh and returns its exit status; err is non-nil
	// only when the command could not be run or its status not learnt.
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	SFTP() (*sftp.Client, error)
}

// Reconnecter is a Guest whose connection can be renewed (vm.Client: the hostagent
// redials the guest's sshd). sshd applies its config per connection, so after a step
// that changes it (StepSSHDPath) Provision asks for a new connection; a Guest without
// the method keeps its old one, and only its new connections see the change.
type Reconnecter interface {
	Reconnect(ctx context.Context) error
}

// StepSSHDPath is the step that edits sshd's SetEnv line (PATH and WSL's variables).
const StepSSHDPath = "sshd path"

// Binfmt rule names. The pe rule is WSL's WSLInterop by default, so that software written
// for WSL finds it (`echo 0 > /proc/sys/fs/binfmt_misc/WSLInterop`); lab-pe without WSL's
// names. Provisioning removes lab's rule of the other name when it finds it.
const (
	RuleWSLInterop = "WSLInterop"
	RuleLabPE      = "lab-pe"
	RuleHost       = "lab-host"
)

// WSLInteropValue is what WSL_INTEROP holds in a lab guest. WSL's is the unix socket of
// the session's interop server (/run/WSL/<pid>_interop); lab's interpreter reaches the relay
// over vsock, named in this file, which exists whenever interop is provisioned.
const WSLInteropValue = ConfigPath

// Paths in the guest. They are fixed so that a guest provisioned by one lab version can
// be re-provisioned (and cleaned) by another.
const (
	InterpreterPath = "/usr/local/lib/lab/interop" // the static lab-interop binary
	LabpathPath     = "/usr/bin/labpath"           // symlink to the interpreter (multi-call), as WSL's /usr/bin/wslpath
	WslpathPath     = "/usr/bin/wslpath"           // the same, under WSL's name (Config.WSLNames)
	ConfigPath      = "/etc/lab/interop.conf"      // read by the interpreter
	TokenPath       = "/etc/lab/token"             // per-VM secret, 0600 root
	// InterpreterSumPath records the interpreter's sha256 with the identity of the file it
	// was taken from (stat: device, inode, size, mtime, ctime), so that the probe of an
	// unchanged guest need not hash megabytes (see probeScript).
	InterpreterSumPath = "/etc/lab/interop.sum"
	StubDir            = "/usr/bin"               // exposed host commands' stubs (on every PATH, even dropbear's default)
	StubsManifest      = "/etc/lab/exposed"       // names of the stubs provisioning installed, one a line
	BinfmtConfPath     = "/etc/binfmt.d/lab.conf" // persistence where the guest runs systemd
	// WindowsPathFile appends the Windows directories to login shells' PATH (WSL's
	// appendWindowsPath); ProfilePath gets a line that reads /etc/profile.d when it has none.
	WindowsPathFile = "/etc/profile.d/lab-windows-path.sh"
	ProfilePath     = "/etc/profile"
	// WSLEnvFile exports WSL_DISTRO_NAME and WSL_INTEROP to login shells (Config.WSLNames).
	WSLEnvFile = "/etc/profile.d/lab-wsl-env.sh"
	// SSHDConfigPath gets `SetEnv PATH=SSHDDefaultPath:WINDOWS-DIRS WSL_DISTRO_NAME=...
	// WSL_INTEROP=...` (one line: sshd uses only its first SetEnv) so that commands run over
	// new SSH connections (not login shells) find cmd.exe and WSL's variables too; sshd is
	// sent SIGHUP.
	SSHDConfigPath = "/etc/ssh/sshd_config"
	SSHDPidFile    = "/run/sshd.pid"
	// SSHDDefaultPath is the PATH Debian's sshd gives root (its compiled-in superuser path).
	SSHDDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// profileHook makes /etc/profile read /etc/profile.d/*.sh (lab's own initramfs guest has a
// one-line /etc/profile that does not); provisioning appends it once.
const profileHook = `for f in /etc/profile.d/*.sh; do [ -r "$f" ] && . "$f"; done # lab: profile.d`

// Share is a 9p share the guest mounts (lab's one share type): Tag is the QEMU mount tag,
// GuestPath the absolute mount point, HostPath the host directory (for the interpreter's
// path mapping, labpath).
type Share = share.Share

// Exposed is a host program the guest may run by name through a stub on its PATH.
type Exposed struct {
	Name     string // guest command name (file name of the stub)
	HostPath string // absolute host path of the program
}

// Config is what one provisioning run installs. Zero values are documented per field.
type Config struct {
	// Interpreter is the host path of the static lab-interop binary built for the guest's
	// architecture. Zero: InterpreterFor is asked with the guest's GOARCH.
	Interpreter string
	// InterpreterFor finds the interpreter for a GOARCH ("amd64", "arm64"). Zero:
	// FindInterpreter.
	InterpreterFor func(goarch string) (string, error)
	// Token is the per-VM secret (see EnsureToken). Required.
	Token []byte
	// InteropConf renders the interpreter's configuration file. Required.
	InteropConf func(Settings) ([]byte, error)
	// Settings are passed to InteropConf.
	Settings Settings
	// Shares are mounted if they are not already (the image's init mounts the ones named
	// on the kernel command line; provisioning makes sure).
	Shares []Share
	// Exposed are the stubs the guest should have; stubs of other names are removed.
	Exposed []Exposed
	// Stub renders the stub file of an exposed command. Required when Exposed is not empty.
	Stub func(Exposed) []byte
	// StubMagic identifies stub files (their first bytes); it is also the magic of the
	// exposed-command binfmt rule. Required.
	StubMagic []byte
	// Rules are the binfmt_misc rules to register. Zero: DefaultRules(StubMagic).
	Rules []Rule
	// WindowsPath are guest directories appended to login shells' PATH, as WSL's
	// appendWindowsPath appends the Windows PATH (e.g. /mnt/c/windows/system32). Nil:
	// none, and a PATH file an earlier run wrote is removed.
	WindowsPath []string
	// WSLNames installs WSL's names beside lab's: the pe rule is WSLInterop (else lab-pe),
	// /usr/bin/wslpath links to the interpreter, and login shells and SSH commands get
	// WSL_DISTRO_NAME and WSL_INTEROP. Without it, none of these is installed, and those an
	// earlier run installed are removed.
	WSLNames bool
	// DistroName is WSL_DISTRO_NAME (lab: the VM's name). Required with WSLNames.
	DistroName string
	// Progress receives one line per step. Nil: silent.
	Progress io.Writer
}

// Drive maps a Windows drive letter to the guest directory that shows it (labpath).
type Drive struct {
	Letter    string // "C:"
	GuestPath string // "/mnt/c"
}

// Settings are the facts the interpreter's config file carries.
type Settings struct {
	RelayAddr string  // e.g. "vsock:2:5555"
	TokenPath string  // zero: TokenPath
	Shares    []Share // guest path -> host path (labpath, cwd mapping)
	Drives    []Drive // Windows drives (the Windows personality)
	// CwdWarning asks the relay for its "not in a shared folder" line on the program's
	// stderr. Provisioning sets it from /etc/wsl.conf [lab] cwdWarning.
	CwdWarning bool
	// Formats are configured formats (a lab file's): the interpreter detects them as
	// binfmt_misc matched them. Nil: only the built-in ones.
	Formats []formats.Format
}

// RuleFlags are the flags of every rule lab registers: P keeps the caller's argv[0], F
// opens the interpreter at registration (so the rules work in other mount namespaces and
// chroots, as WSL's do), and O passes the interpreter the program's file open (WSL's
// rule has no O): the interpreter reads the file's head from that descriptor instead of
// opening the file again, which for a file in a share (/mnt/c, 9p) cut a launch's 9p
// requests from 20 to 11 (docs/DESIGN.md, "PE launch against Wine, again").
const RuleFlags = "POF"

// DefaultRules are lab's two formats: pe (magic MZ, as WSL's WSLInterop registration;
// named WSLInterop with wslNames, else lab-pe) and host (exposed host commands: the stub
// magic).
func DefaultRules(stubMagic []byte, wslNames bool) []Rule {
	pe := RuleLabPE
	if wslNames {
		pe = RuleWSLInterop
	}
	return []Rule{
		{Name: pe, Magic: []byte("MZ"), Interpreter: InterpreterPath, Flags: RuleFlags},
		{Name: RuleHost, Magic: slices.Clone(stubMagic), Interpreter: InterpreterPath, Flags: RuleFlags},
	}
}

// otherRules are lab's rules of the names not in use (the pe rule under its other name):
// provisioning removes them, so that the two names never both route MZ files.
func otherRules(rules []Rule) []Rule {
	var out []Rule
	for _, name := range []string{RuleWSLInterop, RuleLabPE} {
		if !slices.ContainsFunc(rules, func(r Rule) bool { return r.Name == name }) {
			out = append(out, Rule{Name: name, Magic: []byte("MZ"), Interpreter: InterpreterPath, Flags: RuleFlags})
		}
	}
	return out
}

// Step is one thing provisioning checked, and what it did about it.
type Step struct {
	Name    string // e.g. "interpreter", "rule lab-pe", "share host"
	Changed bool
	Detail  string // e.g. "up to date (sha256 1a2b3c4d)", "replaced"
}

// Result lists every step of a provisioning run.
type Result struct {
	Arch  string // guest GOARCH
	Steps []Step
}

// Changed reports whether any step changed the guest.
func (r *Result) Changed() bool {
	return slices.ContainsFunc(r.Steps, func(s Step) bool { return s.Changed })
}

// StepChanged reports whether the step with this name changed the guest.
func (r *Result) StepChanged(name string) bool {
	return slices.ContainsFunc(r.Steps, func(s Step) bool { return s.Name == name && s.Changed })
}

// Summary is one line: "nothing changed (N checks)" or "changed: a, b".
func (r *Result) Summary() string {
	var changed []string
	for _, s := range r.Steps {
		if s.Changed {
			changed = append(changed, s.Name)
		}
	}
	if len(changed) == 0 {
		return fmt.Sprintf("guest already provisioned: nothing changed (%d checks)", len(r.Steps))
	}
	return "changed: " + strings.Join(changed, ", ")
}

func (c *Config) setDefaults() error {
	if len(c.Token) == 0 {
		return errors.New("provision: no token (see provision.EnsureToken)")
	}
	if c.InteropConf == nil {
		return errors.New("provision: no InteropConf renderer")
	}
	if len(c.StubMagic) == 0 {
		return errors.New("provision: no stub magic")
	}
	if len(c.Exposed) > 0 && c.Stub == nil {
		return errors.New("provision: exposed commands but no Stub renderer")
	}
	if c.InterpreterFor == nil {
		c.InterpreterFor = FindInterpreter
	}
	if c.Rules == nil {
		c.Rules = DefaultRules(c.StubMagic, c.WSLNames)
	}
	if c.WSLNames && (c.DistroName == "" || strings.ContainsAny(c.DistroName, " \t\n'\"\\$`=")) {
		return fmt.Errorf("provision: distribution name %q: must be a plain word (it becomes WSL_DISTRO_NAME)", c.DistroName)
	}
	for _, r := range c.Rules {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	if c.Settings.TokenPath == "" {
		c.Settings.TokenPath = TokenPath
	}
	if c.Settings.Shares == nil {
		c.Settings.Shares = c.Shares
	}
	for _, s := range c.Shares {
		if s.Tag == "" || !path.IsAbs(s.GuestPath) {
			return fmt.Errorf("provision: share %+v: needs a tag and an absolute guest path", s)
		}
	}
	for _, e := range c.Exposed {
		if err := checkName(e.Name); err != nil {
			return err
		}
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00 \t\n'\"\\$`") {
		return fmt.Errorf("provision: exposed command name %q: must be a plain file name", name)
	}
	return nil
}

// Provision brings the guest to the state cfg describes, changing only what differs, then
// reads every binfmt rule back from the kernel. Running it twice changes nothing the
// second time (Result.Changed is false).
func Provision(ctx context.Context, g Guest, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	stubs := map[string][]byte{}
	stubSums := map[string]string{}
	for _, e := range cfg.Exposed {
		stubs[e.Name] = cfg.Stub(e)
		stubSums[e.Name] = sum(stubs[e.Name])
	}
	// One round trip learns everything (probe); when nothing differs, that is all.
	st, err := probe(ctx, g, append(slices.Clone(cfg.Rules), otherRules(cfg.Rules)...), cfg.StubMagic, stubSums)
	if err != nil {
		return nil, err
	}
	want, err := cfg.desired(st.goarch, st.wslConf, stubs)
	if err != nil {
		return nil, err
	}
	p := plan(st, want)
	res := &Result{Arch: st.goarch, Steps: p.steps}
	if p.empty() {
		// The probe read the rules from the kernel as Verify would, and they matched.
		if err := verifyState(st, cfg.Rules, want.enabled); err != nil {
			return res, err
		}
	} else {
		if err := p.apply(ctx, g); err != nil {
			return res, err
		}
		if rc, ok := g.(Reconnecter); ok && res.StepChanged(StepSSHDPath) {
			if err := rc.Reconnect(ctx); err != nil {
				return res, fmt.Errorf("provision: sshd's config changed but the guest connection could not be renewed (restart the VM to apply it): %w", err)
			}
		}
		if err := Verify(ctx, g, cfg.Rules, want.enabled); err != nil {
			return res, err
		}
	}
	if cfg.Progress != nil {
		for _, s := range res.Steps {
			mark := "ok     "
			if s.Changed {
				mark = "changed"
			}
			fmt.Fprintf(cfg.Progress, "  %s  %-22s %s\n", mark, s.Name, s.Detail)
		}
		fmt.Fprintf(cfg.Progress, "provision: %s\n", res.Summary())
	}
	return res, nil
}

// desired computes what a guest of goarch whose /etc/wsl.conf reads wslConfText should
// hold (warnings about wsl.conf go to Progress).
func (cfg *Config) desired(goarch, wslConfText string, stubs map[string][]byte) (desired, error) {
	// /etc/wsl.conf, read as WSL's init reads it at start (see WSLConf).
	wslConf := ParseWSLConf(wslConfText)
	for _, w := range wslConf.Warnings {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "provision: warning: %s\n", w)
		}
	}
	settings := cfg.Settings
	settings.CwdWarning = wslConf.CwdWarning
	winDirs := cfg.WindowsPath
	if !wslConf.AppendWindowsPath {
		winDirs = nil
	}
	interp := cfg.Interpreter
	if interp == "" {
		var err error
		if interp, err = cfg.InterpreterFor(goarch); err != nil {
			return desired{}, err
		}
	}
	interpData, err := os.ReadFile(interp)
	if err != nil {
		return desired{}, fmt.Errorf("provision: read interpreter: %w", err)
	}
	conf, err := cfg.InteropConf(settings)
	if err != nil {
		return desired{}, fmt.Errorf("provision: render interpreter config: %w", err)
	}
	return desired{
		winPath: windowsPathScript(winDirs),
		winDirs: winDirs,
		wslEnv:  wslEnv(cfg.WSLNames, cfg.DistroName, wslConf.InteropEnabled),
		wslpath: cfg.WSLNames,
		enabled: wslConf.InteropEnabled,
		others:  otherRules(cfg.Rules),
		interp:  interpData,
		conf:    conf,
		token:   cfg.Token,
		rules:   cfg.Rules,
		shares:  cfg.Shares,
		magic:   cfg.StubMagic,
		stubs:   stubs,
	}, nil
}

// desired is what the guest should hold.
type desired struct {
	winPath             []byte   // WindowsPathFile's content; nil: no such file
	winDirs             []string // the Windows PATH directories
	wslEnv              []envVar // WSL's variables for login shells and SSH commands
	wslpath             bool     // WslpathPath links to the interpreter
	enabled             bool     // the rules are enabled (wsl.conf [interop] enabled)
	others              []Rule   // lab's rules of other names, removed when registered
	interp, conf, token []byte
	rules               []Rule
	shares              []Share
	magic               []byte
	stubs               map[string][]byte // name -> content
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// envVar is one variable lab sets for login shells and SSH commands.
type envVar struct{ name, value string }

// wslEnv is WSL's variables: WSL_DISTRO_NAME always, WSL_INTEROP only while interop is
// enabled (WSL creates its interop server, and sets the variable, only then).
func wslEnv(wslNames bool, distro string, interop bool) []envVar {
	if !wslNames {
		return nil
	}
	vars := []envVar{{"WSL_DISTRO_NAME", distro}}
	if interop {
		vars = append(vars, envVar{"WSL_INTEROP", WSLInteropValue})
	}
	return vars
}

func envNames(vars []envVar) string {
	var names []string
	for _, v := range vars {
		names = append(names, v.name)
	}
	return strings.Join(names, ", ")
}

// wslEnvScript is the profile.d file that exports vars (nil: none).
func wslEnvScript(vars []envVar) []byte {
	if len(vars) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# WSL's variables (written by lab provision; lab provision --no-wsl-names removes it).\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "export %s=%s\n", v.name, shell.Quote(v.value))
	}
	return []byte(b.String())
}

// windowsPathScript is the profile.d file that appends dirs to PATH once (nil: no dirs).
func windowsPathScript(dirs []string) []byte {
	if len(dirs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# The Windows personality's PATH, as WSL's appendWindowsPath (written by lab provision;\n")
	b.WriteString("# lab provision --no-windows-path removes it).\n")
	for _, d := range dirs {
		fmt.Fprintf(&b, "case \":$PATH:\" in *:%s:*) ;; *) PATH=\"$PATH:%s\" ;; esac\n", d, d)
	}
	b.WriteString("export PATH\n")
	return []byte(b.String())
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func put(c *sftp.Client, name string, data []byte, mode os.FileMode) error {
	f, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("provision: upload %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("provision: upload %s: %w", name, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("provision: chmod %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("provision: upload %s: %w", name, err)
	}
	return nil
}

// run runs cmd and turns a non-zero status into an error carrying its stderr.
func run(ctx context.Context, g Guest, cmd string, stdin io.Reader) error {
	var stderr bytes.Buffer
	code, err := g.Run(ctx, cmd, stdin, io.Discard, &stderr)
	if err != nil {
		return fmt.Errorf("provision: guest: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("provision: guest command failed (status %d): %s", code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Verify reads every rule back from /proc/sys/fs/binfmt_misc and fails with the reason
// when the kernel's view differs from the rule, or (wantEnabled) when it is disabled.
func Verify(ctx context.Context, g Guest, rules []Rule, wantEnabled bool) error {
	st, err := probe(ctx, g, rules, nil, nil)
	if err != nil {
		return err
	}
	return verifyState(st, rules, wantEnabled)
}

// verifyState is Verify on a probed state.
func verifyState(st *state, rules []Rule, wantEnabled bool) error {
	var errs []error
	for _, r := range rules {
		cur, ok := st.rules[r.Name]
		switch {
		case !st.binfmtMounted:
			return fmt.Errorf("provision: verify: binfmt_misc is not mounted on %s", BinfmtDir)
		case !ok:
			errs = append(errs, fmt.Errorf("provision: verify: rule %s is not registered (%s/%s missing)", r.Name, BinfmtDir, r.Name))
		case cur.err != nil:
			errs = append(errs, fmt.Errorf("provision: verify: rule %s: %w", r.Name, cur.err))
		case r.Mismatch(cur.st) != "":
			errs = append(errs, fmt.Errorf("provision: verify: rule %s: kernel reports %s", r.Name, r.Mismatch(cur.st)))
		case wantEnabled && !cur.st.Enabled:
			errs = append(errs, fmt.Errorf("provision: verify: rule %s is disabled (lab interop on enables it)", r.Name))
		case !wantEnabled && cur.st.Enabled:
			errs = append(errs, fmt.Errorf("provision: verify: rule %s is still enabled", r.Name))
		}
	}
	return errors.Join(errs...)
}

// SetInterop enables or disables every rule of rules that is registered, like `echo 0 >
// .../WSLInterop` in WSL; it lasts until the next boot or provisioning. rules may name
// more than the guest has (the pe rule under both its names): those missing are skipped,
// but at least one must be registered. It then reads the rules back.
func SetInterop(ctx context.Context, g Guest, rules []Rule, on bool) error {
	st, err := probe(ctx, g, rules, nil, nil)
	if err != nil {
		return err
	}
	var present []Rule
	var names []string
	for _, r := range rules {
		names = append(names, r.Name)
		if _, ok := st.rules[r.Name]; ok {
			present = append(present, r)
		}
	}
	if len(present) == 0 {
		return fmt.Errorf("provision: none of lab's binfmt rules (%s) is registered: run lab provision", strings.Join(names, ", "))
	}
	v := "0"
	if on {
		v = "1"
	}
	var lines []string
	for _, r := range present {
		lines = append(lines, "echo "+v+" > "+BinfmtDir+"/"+r.Name)
	}
	if err := run(ctx, g, "set -e\n"+strings.Join(lines, "\n"), nil); err != nil {
		return err
	}
	return Verify(ctx, g, present, on)
}
