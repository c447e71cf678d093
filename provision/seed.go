package provision

import (
	"os"
	"reflect"
	"strings"
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
	cfg.Exposed = nil
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	want, err := cfg.desired(goarch, "", nil)
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
