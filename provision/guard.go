package provision

import (
	"path"
	"strings"
)

// The binfmt guard of guests with systemd: WSL's binfmt problem (WSL#8843, #10389,
// #11471, #13449) is that binfmt_misc tries the newest rule first, so a package's own
// MZ handler registered after interop's (binfmt-support's update-binfmts, a wine
// package's rule) takes every Windows program; and `systemctl restart systemd-binfmt`
// first removes every rule (its ExecStop writes -1 to binfmt_misc/status) and then
// registers only /etc/binfmt.d's and /usr/lib/binfmt.d's, in file-name order, so a
// foreign rule from a file named after lab.conf wins. WSL's answer is a unit
// (wsl-binfmt) that registers its interpreter a second time, as WSLInterop-late, after
// systemd-binfmt. lab does the same with its own rules under their own names (so
// `lab interop off`, provisioning's verify and WSL software that reads WSLInterop see
// one rule): lab-binfmt.service runs after systemd-binfmt and binfmt-support, and again
// whenever systemd-binfmt restarts (PartOf=), and an apt hook runs it after every
// dpkg run that apt starts (packages register handlers in their postinst).
//
// The unit lives where locally installed software's units go, /usr/local/lib/systemd/system,
// not in /etc/systemd/system: /etc outranks /run in systemd's unit search path, so a unit
// file in /etc cannot be masked for this boot (`systemctl mask --runtime` writes its
// /dev/null link to /run, silently shadowed), and an administrator's own file in /etc could
// not override lab's.
const (
	GuardUnitPath = "/usr/local/lib/systemd/system/lab-binfmt.service"
	// oldGuardUnitPath is where lab wrote the unit before; provisioning moves it.
	oldGuardUnitPath = "/etc/systemd/system/lab-binfmt.service"
	GuardScriptPath  = "/usr/local/lib/lab/binfmt-last"
	GuardAptPath     = "/etc/apt/apt.conf.d/99lab-binfmt"
	guardUnitName    = "lab-binfmt.service"
)

// guardScript registers every rule of lab.conf again (removed first: a rule moves to the
// front of binfmt_misc's list only when it is registered), keeping a disabled rule
// disabled (lab interop off, wsl.conf).
const guardScript = `#!/bin/sh
# lab: register lab's binfmt rules again, after every other (written by lab provision).
# binfmt_misc tries the newest rule first: a package's MZ handler registered after
# lab's would take Windows programs, and systemctl restart systemd-binfmt removes
# every rule, then registers binfmt.d's in file-name order.
d=` + BinfmtDir + `
[ -e "$d/register" ] || mount -t binfmt_misc binfmt_misc "$d" || exit 1
[ -f ` + BinfmtConfPath + ` ] || exit 0
grep '^:' ` + BinfmtConfPath + ` | while IFS= read -r rule; do
	name=${rule#:}
	name=${name%%:*}
	state=enabled
	if [ -e "$d/$name" ]; then
		head -n 1 "$d/$name" | grep -q '^disabled' && state=disabled
		echo -1 > "$d/$name"
	fi
	printf '%s\n' "$rule" > "$d/register" || { echo "lab-binfmt: registering $name failed" >&2; exit 1; }
	[ "$state" = enabled ] || echo 0 > "$d/$name"
done
`

const guardUnit = `[Unit]
Description=lab: register lab's binfmt rules after every other (interop keeps MZ files)
Documentation=https://github.com/microsoft/WSL/issues/8843
After=systemd-binfmt.service binfmt-support.service proc-sys-fs-binfmt_misc.mount
Before=ssh.service
PartOf=systemd-binfmt.service
ConditionPathExists=` + BinfmtConfPath + `

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + GuardScriptPath + `

[Install]
WantedBy=multi-user.target systemd-binfmt.service
`

const guardApt = `// lab: packages may register their own binfmt handlers (update-binfmts in a postinst);
// lab's rules go back on top after every dpkg run apt starts (written by lab provision).
DPkg::Post-Invoke { "if [ -d /run/systemd/system ] && [ -e ` + BinfmtConfPath + ` ]; then systemctl restart ` + guardUnitName + ` || true; fi"; };
`

// planGuard: on a guest with systemd, the guard that registers lab's rules after
// systemd-binfmt and package handlers (unit, script, and with apt the dpkg hook). The
// unit file must be in place before daemon-reload and enable, so they run in the record
// phase, after the renames.
func planGuard(p *planned, st *state, _ desired) {
	if !st.systemd {
		return
	}
	files := []upload{{GuardScriptPath, []byte(guardScript), 0o755}, {GuardUnitPath, []byte(guardUnit), 0o644}}
	if st.apt {
		files = append(files, upload{GuardAptPath, []byte(guardApt), 0o644})
	}
	var changed []string
	for _, f := range files {
		if st.files[f.target] != sum(f.data) {
			p.upload(f.target, f.data, f.mode)
			changed = append(changed, f.target)
		}
	}
	if len(changed) > 0 {
		p.run(phasePrepare, "mkdir -p "+path.Dir(GuardUnitPath))
	}
	if _, ok := st.files[oldGuardUnitPath]; ok {
		// Its enable links point at it: disable first, then remove it.
		p.run(phaseRecord, "systemctl disable "+guardUnitName+" 2>/dev/null; rm -f "+oldGuardUnitPath)
		changed = append(changed, "removed "+oldGuardUnitPath)
	}
	switch {
	case len(changed) > 0:
		p.run(phaseRecord, "systemctl daemon-reload", "systemctl enable "+guardUnitName+" 2>/dev/null")
		p.step("binfmt guard", true, "written "+strings.Join(changed, ", ")+"; "+guardUnitName+" enabled (lab's rules registered after systemd-binfmt and package handlers)")
	case !st.guardEnabled:
		p.run(phaseRecord, "systemctl enable "+guardUnitName+" 2>/dev/null")
		p.step("binfmt guard", true, guardUnitName+" enabled")
	default:
		p.step("binfmt guard", false, "up to date")
	}
}
