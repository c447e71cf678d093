package provision

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"time"

	"lab/internal/shell"
)

// BootFile is a file of a guest's boot archive (the instance cpio lab appends to the
// image's initramfs); package images writes it.
type BootFile struct {
	Path string
	Mode os.FileMode // permission bits of a regular file
	Data []byte
}

// SeedScriptPath is where Seed's boot script goes: the initramfs image's init runs every
// executable in /etc/lab/rc.d (in name order) after mounting binfmt_misc and the shares
// named on the kernel command line, and before it starts sshd.
const SeedScriptPath = "/etc/lab/rc.d/50-lab-provision"

// Seed renders what Provision would do on a freshly booted lab initramfs guest of goarch
// (no wsl.conf, binfmt_misc and cfg.Shares mounted by the image's init, an sshd_config
// without SetEnv, nothing of lab's installed) as files for the guest's boot archive: the
// interpreter, its config, the token, the profile.d files, the stub manifest and a boot
// script that makes the links, edits sshd_config, records the interpreter's sum and
// registers the rules before sshd starts. A guest booted with them needs no upload and
// no sshd restart: the first Provision after boot finds everything in place and does one
// round trip. It is a head start only: Provision still compares everything and corrects
// what differs (a guest that is not lab's initramfs, a wsl.conf, exposed commands: their
// stubs are not seeded, since the image's /usr/bin is not known here).
func Seed(cfg Config, goarch string) ([]BootFile, error) {
	want, err := seedWant(cfg, goarch)
	if err != nil {
		return nil, err
	}
	st := freshState(goarch, cfg.Shares)
	p := &planned{}
	sshd := &planned{}
	for _, f := range planSteps {
		if isSSHDStep(f) {
			f(sshd, st, want)
			continue
		}
		f(p, st, want)
	}
	var files []BootFile
	for _, u := range p.uploads {
		files = append(files, BootFile{Path: u.target, Mode: u.mode, Data: u.data})
	}
	if p.token != nil {
		files = append(files, BootFile{Path: TokenPath, Mode: 0o600, Data: p.token})
	}
	var script strings.Builder
	script.WriteString("#!/bin/sh\n# lab: provisioning's head start (provision.Seed), run once at boot before sshd.\n")
	for _, ph := range []phase{phasePrepare, phaseRecord, phaseRegister} {
		for _, c := range p.cmds {
			if c.phase == ph {
				script.WriteString(c.sh + "\n")
			}
		}
		if ph != phasePrepare || len(sshd.cmds) == 0 {
			continue
		}
		// Only OpenSSH has the file; sshd is not running yet, so its SIGHUP is a no-op.
		script.WriteString("if [ -f " + SSHDConfigPath + " ]; then\n")
		for _, c := range sshd.cmds {
			script.WriteString("\t" + c.sh + "\n")
		}
		script.WriteString("fi\n")
	}
	files = append(files, BootFile{Path: SeedScriptPath, Mode: 0o755, Data: []byte(script.String())})
	return files, nil
}

// seedWant is what a seed installs: cfg's desired state without exposed commands (their
// stubs go where the image's /usr/bin is, which only the guest knows) and no wsl.conf.
func seedWant(cfg Config, goarch string) (desired, error) {
	cfg.Exposed = nil
	if err := cfg.setDefaults(); err != nil {
		return desired{}, err
	}
	return cfg.desired(goarch, "", nil)
}

// isSSHDStep reports whether f is planSSHD.
func isSSHDStep(f planStep) bool {
	return reflect.ValueOf(f).Pointer() == reflect.ValueOf(planStep(planSSHD)).Pointer()
}

// freshState is what the probe reports on lab's initramfs guest right after boot.
func freshState(goarch string, shares []Share) *state {
	st := &state{
		goarch:        goarch,
		files:         map[string]string{},
		etcLabMode:    "755",
		binfmtMounted: true,
		sshdConfig:    true,
		rules:         map[string]ruleProbe{},
		mounts:        map[string]string{},
		stubs:         map[string]string{},
		others:        map[string]bool{},
	}
	for _, s := range shares {
		st.mounts[s.GuestPath] = s.Tag
	}
	return st
}

// The seed of a disk guest (SeedDisk) is staged in /run/lab/seed, and DiskSeedScriptPath
// runs before systemd-binfmt and sshd: lab up appends the files as a cpio to the image's
// lab initrd, whose /init copies them onto the root's /run (a tmpfs it mounts, which
// systemd keeps), and lab-instance.service runs the script. Not through the instance tar
// (fw_cfg): the guest's qemu_fw_cfg driver reads a file page by page and skips to each
// page's offset by port reads (quadratic: 1 MB took 99 s under TCG).
const (
	DiskSeedDir        = "/run/lab/seed"
	DiskSeedScriptPath = DiskSeedDir + "/apply"
	// diskSeedArchive holds the files at their guest paths (token included: 0600).
	diskSeedArchive = DiskSeedDir + "/files.tar"
	// diskSeedGuardSum is sha256sum -c's list for the guard's unit.
	diskSeedGuardSum = DiskSeedDir + "/guard.sha256"
)

// guardWants are the links `systemctl enable lab-binfmt.service` makes ([Install] of
// guardUnit): the probe tests them instead of running systemctl (a heavy dynamic
// binary, 0.7 s under TCG on a loaded host), and the disk seed makes them.
var guardWants = []string{
	"/etc/systemd/system/multi-user.target.wants/" + guardUnitName,
	"/etc/systemd/system/systemd-binfmt.service.wants/" + guardUnitName,
}

// SeedDisk is Seed for a guest on a disk of its own with systemd (the Debian image),
// which may have been provisioned on an earlier boot: files for /run/lab/seed (see
// DiskSeedDir), a tar of what Provision would upload (the
// interpreter, its config, the token, /etc/binfmt.d/lab.conf, the guard's unit, script
// and apt hook, the profile.d files) and a script that, before systemd-binfmt and sshd
// start, unpacks it over /, makes the links, the guard's enable links (and reloads
// systemd only when it had to make them or the unit changed: systemd loaded its units
// before), sshd's SetEnv line when it differs, the interpreter's recorded sum, and an
// empty stubs manifest when there is none (the disk's own manifest names the stubs an
// earlier run exposed). systemd-binfmt then registers lab.conf's rules and the guard runs
// after it, as on every boot of a provisioned machine. A machine with /etc/wsl.conf is
// left alone (it changes what lab installs; Provision reads it). Provision stays the
// authority: it checks everything and corrects what differs.
func SeedDisk(cfg Config, goarch string) ([]BootFile, error) {
	want, err := seedWant(cfg, goarch)
	if err != nil {
		return nil, err
	}
	st := freshState(goarch, nil)
	st.etcLabMode = ""
	st.systemd, st.apt, st.profileHook = true, true, true
	p := plan(st, want)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode os.FileMode, data []byte) error {
		h := &tar.Header{Name: strings.TrimPrefix(name, "/"), Mode: int64(mode.Perm()), Uname: "root", Gname: "root", ModTime: time.Unix(0, 0)}
		if mode.IsDir() {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	// /etc/lab readable by all (the interpreter runs as the user); other directories
	// are created as needed and existing ones keep their owner and mode.
	if err := add("/etc/lab", fs.ModeDir|0o755, nil); err != nil {
		return nil, fmt.Errorf("provision: seed: %w", err)
	}
	var guardSum string
	for _, u := range p.uploads {
		switch u.target {
		case StubsManifest:
			continue // only when missing: see the script
		case GuardUnitPath:
			guardSum = sum(u.data)
		}
		if err := add(u.target, u.mode, u.data); err != nil {
			return nil, fmt.Errorf("provision: seed: %w", err)
		}
	}
	if p.token != nil {
		if err := add(TokenPath, 0o600, p.token); err != nil {
			return nil, fmt.Errorf("provision: seed: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("provision: seed: %w", err)
	}

	var b strings.Builder
	b.WriteString(`#!/bin/sh
# lab: provisioning's head start on a disk guest (provision.SeedDisk), run by the image's
# lab-instance.service before systemd-binfmt and sshd start; lab provision checks it all.
trap 'rm -f ` + diskSeedArchive + `' EXIT
# /etc/wsl.conf changes what lab installs: lab provision reads it and decides.
[ -e ` + WSLConfPath + ` ] && exit 0
set -e
reload=
# systemd loaded its units before this runs: a new or changed guard unit, or enable
# links made here, take a reload (a fresh disk's first boot only).
sha256sum --status -c ` + diskSeedGuardSum + ` 2>/dev/null || reload=1
for l in ` + strings.Join(guardWants, " ") + `; do
	[ -L $l ] && [ $l -ef ` + GuardUnitPath + ` ] && continue
	mkdir -p "${l%/*}"
	ln -sfn ` + GuardUnitPath + ` $l
	reload=1
done
tar -x -f ` + diskSeedArchive + ` -C /
[ -e ` + StubsManifest + ` ] || : > ` + StubsManifest + `
`)
	links := []string{LabpathPath}
	if want.wslpath {
		links = append(links, WslpathPath)
	}
	for _, l := range links {
		b.WriteString("[ -L " + l + " ] && [ " + l + " -ef " + InterpreterPath + " ] || ln -sfn " + InterpreterPath + " " + l + "\n")
	}
	if line := want.sshdSetEnv(); line != "" {
		// sshd is not running yet: no SIGHUP. Only the first SetEnv counts (planSSHD).
		b.WriteString(`if [ -f ` + SSHDConfigPath + ` ]; then
	cur=
	while IFS= read -r l || [ -n "$l" ]; do case "$l" in "SetEnv "*) cur=$l; break ;; esac; done < ` + SSHDConfigPath + `
	if [ "$cur" != ` + shell.Quote(line) + ` ]; then
		sed -i '/^SetEnv /d' ` + SSHDConfigPath + `
		echo ` + shell.Quote(line) + ` >> ` + SSHDConfigPath + `
	fi
fi
`)
	}
	b.WriteString("echo \"$(stat -c '" + interpIDFormat + "' " + InterpreterPath + ") " + sum(want.interp) + "\" > " + InterpreterSumPath + "\n")
	b.WriteString(`[ -z "$reload" ] || systemctl daemon-reload` + "\n")
	return []BootFile{
		{Path: diskSeedArchive, Mode: 0o600, Data: buf.Bytes()},
		{Path: diskSeedGuardSum, Mode: 0o644, Data: []byte(guardSum + "  " + GuardUnitPath + "\n")},
		{Path: DiskSeedScriptPath, Mode: 0o755, Data: []byte(b.String())},
	}, nil
}
