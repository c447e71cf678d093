package provision

import (
	"bytes"
	"context"
	"fmt"
	"lab/internal/shell"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
)

// phase is when a guest command runs in the apply script. The order is what the kernel
// and the files need, so it is a property of each command, not of where a step happens to
// sit in plan.
type phase int

const (
	// phasePrepare: directories, links, mounts, removals, sshd's config; before the
	// uploads are renamed into place.
	phasePrepare phase = iota
	// phaseRecord: after the renames, what describes an installed file (the
	// interpreter's sum, InterpreterSumPath).
	phaseRecord
	// phaseRegister: binfmt_misc rule removals, registrations, enabling and disabling;
	// last, because flag F makes the kernel open the interpreter when a rule is
	// registered, so the new file must be in place first.
	phaseRegister
)

// guestCmd is one shell command of the apply script.
type guestCmd struct {
	phase phase
	sh    string
}

// upload is a file written through SFTP to a temporary name in the target's directory,
// then renamed over the target by the apply script (rename(2) is atomic: a running
// interpreter keeps its old inode, a new launch sees the whole new file).
type upload struct {
	target string
	data   []byte
	mode   os.FileMode
}

// planned is what one provisioning run does: the steps it reports and the guest work.
type planned struct {
	steps   []Step
	uploads []upload
	cmds    []guestCmd
	token   []byte // written with umask 077 through stdin (never through a 0666 window)
}

// empty reports whether the plan has nothing to do in the guest.
func (p *planned) empty() bool {
	return len(p.uploads) == 0 && len(p.cmds) == 0 && p.token == nil
}

func (p *planned) step(name string, changed bool, detail string) {
	p.steps = append(p.steps, Step{Name: name, Changed: changed, Detail: detail})
}

func (p *planned) run(ph phase, sh ...string) {
	for _, l := range sh {
		p.cmds = append(p.cmds, guestCmd{ph, l})
	}
}

func (p *planned) upload(target string, data []byte, mode os.FileMode) {
	p.uploads = append(p.uploads, upload{target, data, mode})
}

// tmpName is where an upload is written before its rename.
func (u upload) tmpName() string {
	return path.Join(path.Dir(u.target), ".lab-tmp."+path.Base(u.target))
}

// uploadDirs is the command making every upload's directory, which must exist before
// the upload is written next to its target (a fresh Debian disk has no
// /usr/local/lib/systemd/system for the guard's unit).
func (p *planned) uploadDirs() string {
	var dirs []string
	for _, u := range p.uploads {
		if d := path.Dir(u.target); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	return "mkdir -p " + shell.Join(dirs)
}

// script is the apply script's commands in order: prepare, the renames of the uploads,
// record, register; within a phase, in plan order.
func (p *planned) script() []string {
	var out []string
	add := func(ph phase) {
		for _, c := range p.cmds {
			if c.phase == ph {
				out = append(out, c.sh)
			}
		}
	}
	add(phasePrepare)
	for _, u := range p.uploads {
		out = append(out, "mv -f "+shell.Quote(u.tmpName())+" "+shell.Quote(u.target))
	}
	add(phaseRecord)
	add(phaseRegister)
	return out
}

// planStep is one named part of plan: it compares one thing and adds its report, uploads
// and commands.
type planStep func(p *planned, st *state, want desired)

// planSteps are plan's parts, in the order their steps are reported.
var planSteps = []planStep{
	planDirs,
	planInterpreter,
	planLinks,
	planConfig,
	planToken,
	planBinfmtMount,
	planRules,
	planBinfmtD,
	planGuard,
	planProfileFiles,
	planSSHD,
	planShares,
	planStubs,
}

// plan compares the probed state with the desired one. It is pure, so the idempotence
// rules are unit-tested without a guest.
func plan(st *state, want desired) *planned {
	p := &planned{}
	for _, f := range planSteps {
		f(p, st, want)
	}
	return p
}

// planDirs: lab's directories, /etc/lab readable by all (the interpreter runs as the user).
func planDirs(p *planned, st *state, _ desired) {
	if st.etcLabMode != "755" {
		p.run(phasePrepare, "mkdir -p /usr/local/lib/lab /etc/lab && chmod 0755 /etc/lab")
	}
}

// interpChanged reports whether the guest's interpreter differs from the wanted one.
func interpChanged(st *state, want desired) bool {
	return st.files[InterpreterPath] != sum(want.interp)
}

func planInterpreter(p *planned, st *state, want desired) {
	changed := interpChanged(st, want)
	if changed || !st.interpSum {
		// Not a step: the record only spares the next probe hashing the interpreter.
		p.run(phaseRecord, "echo \"$(stat -c '"+interpIDFormat+"' "+InterpreterPath+") "+sum(want.interp)+"\" > "+InterpreterSumPath)
	}
	if !changed {
		p.step("interpreter", false, "up to date (sha256 "+short(sum(want.interp))+")")
		return
	}
	p.upload(InterpreterPath, want.interp, 0o755)
	detail := "installed"
	if st.files[InterpreterPath] != "" {
		detail = "replaced (was sha256 " + short(st.files[InterpreterPath]) + ")"
	}
	p.step("interpreter", true, fmt.Sprintf("%s: sha256 %s, %d bytes", detail, short(sum(want.interp)), len(want.interp)))
}

// planLinks: labpath always, wslpath with WSL's names (removed without them).
func planLinks(p *planned, st *state, want desired) {
	if st.labpath != InterpreterPath {
		p.run(phasePrepare, "ln -sfn "+InterpreterPath+" "+LabpathPath)
		p.step("labpath", true, LabpathPath+" -> "+InterpreterPath)
	} else {
		p.step("labpath", false, "up to date")
	}
	switch {
	case want.wslpath && st.wslpath != InterpreterPath:
		p.run(phasePrepare, "ln -sfn "+InterpreterPath+" "+WslpathPath)
		p.step("wslpath", true, WslpathPath+" -> "+InterpreterPath)
	case want.wslpath:
		p.step("wslpath", false, "up to date")
	case st.wslpath == InterpreterPath:
		p.run(phasePrepare, "rm -f "+WslpathPath)
		p.step("wslpath", true, "removed "+WslpathPath+" (no WSL names)")
	}
}

func planConfig(p *planned, st *state, want desired) {
	if st.files[ConfigPath] != sum(want.conf) {
		p.upload(ConfigPath, want.conf, 0o644)
		p.step("config", true, "written "+ConfigPath)
	} else {
		p.step("config", false, "up to date")
	}
}

func planToken(p *planned, st *state, want desired) {
	if st.files[TokenPath] != sum(want.token) || st.tokenMode != "600" {
		p.token = want.token
		p.step("token", true, "written "+TokenPath+" (0600 root)")
	} else {
		p.step("token", false, "up to date")
	}
}

func planBinfmtMount(p *planned, st *state, _ desired) {
	if !st.binfmtMounted {
		p.run(phasePrepare, "mount -t binfmt_misc binfmt_misc "+BinfmtDir)
		p.step("binfmt_misc", true, "mounted on "+BinfmtDir)
	} else {
		p.step("binfmt_misc", false, "mounted")
	}
}

// planRules: lab's rules registered as wanted, enabled or disabled, and lab's pe rule
// under the name not in use removed.
func planRules(p *planned, st *state, want desired) {
	// Lab's pe rule under the name not in use goes first: two MZ rules must never coexist.
	for _, r := range want.others {
		if cur, ok := st.rules[r.Name]; ok && cur.err == nil && cur.st.Interpreter == InterpreterPath {
			p.run(phaseRegister, "echo -1 > "+BinfmtDir+"/"+r.Name)
			p.step("rule "+r.Name, true, "removed (the pe rule is "+want.rules[0].Name+" now)")
		}
	}
	// With wsl.conf's [interop] enabled=false the rules are registered but disabled: a
	// foreign file then fails with "Exec format error", as WSL users see it.
	disable, stateWord := "", "enabled"
	if !want.enabled {
		disable, stateWord = "disabled (wsl.conf: [interop] enabled=false)", "disabled"
	}
	reinstalled := interpChanged(st, want)
	for _, r := range want.rules {
		name := "rule " + r.Name
		cur, ok := st.rules[r.Name]
		ctl := BinfmtDir + "/" + r.Name
		reg := "printf '%s' " + shell.Quote(r.String()) + " > " + BinfmtDir + "/register"
		if !want.enabled {
			reg += "\necho 0 > " + ctl
		}
		switch {
		case !ok:
			p.run(phaseRegister, reg)
			p.step(name, true, "registered "+r.String()+" "+stateWord)
		case cur.err != nil || r.Mismatch(cur.st) != "":
			why := "unreadable"
			if cur.err == nil {
				why = r.Mismatch(cur.st)
			}
			p.run(phaseRegister, "echo -1 > "+ctl, reg)
			p.step(name, true, "re-registered ("+why+")")
		case reinstalled:
			// F opened the old interpreter file at registration; the kernel keeps running
			// that inode until the rule is registered again.
			p.run(phaseRegister, "echo -1 > "+ctl, reg)
			p.step(name, true, "re-registered (flag F holds the replaced interpreter open)")
		case want.enabled && !cur.st.Enabled:
			p.run(phaseRegister, "echo 1 > "+ctl)
			p.step(name, true, "enabled")
		case !want.enabled && cur.st.Enabled:
			p.run(phaseRegister, "echo 0 > "+ctl)
			p.step(name, true, disable)
		default:
			p.step(name, false, "registered and "+stateWord)
		}
	}
}

// planBinfmtD persists the rules where systemd would register them at boot.
func planBinfmtD(p *planned, st *state, want desired) {
	if !st.systemd {
		p.step("binfmt.d", false, "no systemd in the guest: rules are registered by lab provision at each boot")
		return
	}
	var conf strings.Builder
	conf.WriteString("# lab interop formats (written by lab provision)\n")
	for _, r := range want.rules {
		conf.WriteString(r.String() + "\n")
	}
	if st.files[BinfmtConfPath] != sum([]byte(conf.String())) {
		p.run(phasePrepare, "mkdir -p /etc/binfmt.d")
		p.upload(BinfmtConfPath, []byte(conf.String()), 0o644)
		p.step("binfmt.d", true, "written "+BinfmtConfPath)
	} else {
		p.step("binfmt.d", false, "up to date")
	}
}

// planProfileFiles: the profile.d files (Windows PATH, WSL's variables) and the hook in
// /etc/profile that reads profile.d when lab puts a file there.
func planProfileFiles(p *planned, st *state, want desired) {
	hooked := st.profileHook
	hook := func() {
		if !hooked {
			p.run(phasePrepare, "grep -q 'profile\\.d' "+ProfilePath+" 2>/dev/null || echo "+shell.Quote(profileHook)+" >> "+ProfilePath)
		}
	}
	switch {
	case want.winPath == nil && st.files[WindowsPathFile] != "":
		p.run(phasePrepare, "rm -f "+WindowsPathFile)
		p.step("windows path", true, "removed "+WindowsPathFile)
	case want.winPath == nil:
		p.step("windows path", false, "off")
	case st.files[WindowsPathFile] != sum(want.winPath) || !st.profileHook:
		p.run(phasePrepare, "mkdir -p /etc/profile.d")
		p.upload(WindowsPathFile, want.winPath, 0o644)
		hook()
		p.step("windows path", true, "written "+WindowsPathFile)
	default:
		p.step("windows path", false, "up to date")
	}
	envFile := wslEnvScript(want.wslEnv)
	switch {
	case envFile == nil && st.files[WSLEnvFile] != "":
		p.run(phasePrepare, "rm -f "+WSLEnvFile)
		p.step("wsl env", true, "removed "+WSLEnvFile)
	case envFile == nil:
		p.step("wsl env", false, "off")
	case st.files[WSLEnvFile] != sum(envFile) || !st.profileHook:
		p.run(phasePrepare, "mkdir -p /etc/profile.d")
		p.upload(WSLEnvFile, envFile, 0o644)
		hook()
		p.step("wsl env", true, "written "+WSLEnvFile+" ("+envNames(want.wslEnv)+")")
	default:
		p.step("wsl env", false, "up to date")
	}
}

// planSSHD: sshd's SetEnv line (lab owns the image's only one; sshd honours only the
// first SetEnv). Changing it restarts the listener (SIGHUP); connections already open,
// such as the hostagent's, keep the environment they started with, so Provision then asks
// a Reconnecter guest for a new connection.
func planSSHD(p *planned, st *state, want desired) {
	if !st.sshdConfig {
		return
	}
	wantLine := want.sshdSetEnv()
	hup := "[ -f " + SSHDPidFile + " ] && kill -HUP \"$(cat " + SSHDPidFile + ")\" || true"
	switch {
	case st.sshdPath == wantLine && wantLine == "":
		p.step(StepSSHDPath, false, "off")
	case st.sshdPath == wantLine:
		p.step(StepSSHDPath, false, "up to date")
	case wantLine == "":
		p.run(phasePrepare, "sed -i '/^SetEnv /d' "+SSHDConfigPath, hup)
		p.step(StepSSHDPath, true, "removed SetEnv from "+SSHDConfigPath)
	default:
		p.run(phasePrepare, "sed -i '/^SetEnv /d' "+SSHDConfigPath, "echo "+shell.Quote(wantLine)+" >> "+SSHDConfigPath, hup)
		p.step(StepSSHDPath, true, wantLine+" in "+SSHDConfigPath+" (new SSH connections)")
	}
}

// sshdSetEnv is the SetEnv line sshd_config should hold ("" for none).
func (want desired) sshdSetEnv() string {
	var vars []string
	if len(want.winDirs) > 0 {
		vars = append(vars, "PATH="+SSHDDefaultPath+":"+strings.Join(want.winDirs, ":"))
	}
	for _, v := range want.wslEnv {
		vars = append(vars, v.name+"="+v.value)
	}
	if len(vars) == 0 {
		return ""
	}
	return "SetEnv " + strings.Join(vars, " ")
}

func planShares(p *planned, st *state, want desired) {
	for _, s := range want.shares {
		name := "share " + s.Tag
		if got, ok := st.mounts[s.GuestPath]; ok {
			if got != s.Tag {
				p.step(name, false, fmt.Sprintf("warning: %s holds share %q, not %q", s.GuestPath, got, s.Tag))
			} else {
				p.step(name, false, "mounted on "+s.GuestPath)
			}
			continue
		}
		p.run(phasePrepare, "mkdir -p "+shell.Quote(s.GuestPath),
			"mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "+shell.Quote(s.Tag)+" "+shell.Quote(s.GuestPath))
		p.step(name, true, "mounted on "+s.GuestPath)
	}
}

// planStubs: a stub for each exposed command (never over a file that is not a lab stub),
// the stubs an earlier run installed and no longer wanted removed, and the manifest.
func planStubs(p *planned, st *state, want desired) {
	names := make([]string, 0, len(want.stubs))
	for n := range want.stubs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		target := StubDir + "/" + n
		data := want.stubs[n]
		if cur, exists := st.stubs[n]; exists && cur == sum(data) {
			p.step("expose "+n, false, "stub up to date")
			continue
		}
		if _, other := st.others[n]; other {
			p.step("expose "+n, false, "warning: "+target+" exists and is not a lab stub; left alone (use --as to pick another name)")
			continue
		}
		p.upload(target, data, 0o755)
		p.step("expose "+n, true, "stub written "+target)
	}
	var stale []string
	for n := range st.stubs {
		if _, ok := want.stubs[n]; !ok && slices.Contains(st.manifest, n) {
			stale = append(stale, n)
		}
	}
	sort.Strings(stale)
	for _, n := range stale {
		p.run(phasePrepare, "rm -f "+shell.Quote(StubDir+"/"+n))
		p.step("unexpose "+n, true, "stub removed")
	}
	manifest := []byte(strings.Join(names, "\n"))
	if len(names) > 0 {
		manifest = append(manifest, '\n')
	}
	if st.files[StubsManifest] != sum(manifest) {
		p.upload(StubsManifest, manifest, 0o644)
	}
}

// apply does the plan in the guest: the uploads (SFTP to temporary names), the token
// (through stdin), then one script (script's order) that renames the uploads into place
// and runs the commands.
func (p *planned) apply(ctx context.Context, g Guest) error {
	if len(p.uploads) > 0 {
		// Directories first: uploads go next to their targets.
		if err := run(ctx, g, p.uploadDirs(), nil); err != nil {
			return err
		}
		c, err := g.SFTP()
		if err != nil {
			return fmt.Errorf("provision: sftp: %w", err)
		}
		for _, u := range p.uploads {
			if err := put(c, u.tmpName(), u.data, u.mode); err != nil {
				return err
			}
		}
	}
	if p.token != nil {
		tmp := path.Dir(TokenPath) + "/.lab-tmp.token"
		cmd := "set -e; mkdir -p /etc/lab; umask 077; cat > " + tmp + "; chown 0:0 " + tmp + "; chmod 0600 " + tmp + "; mv -f " + tmp + " " + TokenPath
		if err := run(ctx, g, cmd, bytes.NewReader(p.token)); err != nil {
			return err
		}
	}
	script := p.script()
	if len(script) == 0 {
		return nil
	}
	return run(ctx, g, "set -e\n"+strings.Join(script, "\n"), nil)
}
