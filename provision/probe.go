package provision

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// state is what one probe learns about the guest: everything provisioning compares, in
// one SSH round trip (each one costs a guest process start, slow under TCG).
type state struct {
	goarch        string
	files         map[string]string // guest path -> sha256 hex; absent: no such file
	tokenMode     string            // octal permission bits of TokenPath, e.g. "600"
	labpath       string            // readlink of LabpathPath
	wslpath       string            // readlink of WslpathPath
	wslConf       string            // WSLConfPath's text ("" when missing)
	binfmtMounted bool
	systemd       bool
	guardEnabled  bool   // lab-binfmt.service is enabled (systemd guests)
	apt           bool   // /etc/apt/apt.conf.d exists
	profileHook   bool   // ProfilePath reads /etc/profile.d
	sshdConfig    bool   // SSHDConfigPath exists (OpenSSH)
	sshdPath      string // its first `SetEnv ...` line, if any
	rules         map[string]ruleProbe
	mounts        map[string]string // 9p mount point -> tag
	stubs         map[string]string // StubDir entries starting with the stub magic: name -> sha256
	others        map[string]bool   // other StubDir entries
	manifest      []string          // StubsManifest: the stubs an earlier run installed
	entries       map[string][2]string
}

type ruleProbe struct {
	st  RuleStatus
	err error
}

// probeScript prints one "key value..." line per fact. It uses only busybox applets.
func probeScript(rules []Rule, names []string) string {
	var b strings.Builder
	b.WriteString(`echo "arch $(uname -m)"
for f in ` + InterpreterPath + ` ` + ConfigPath + ` ` + TokenPath + ` ` + BinfmtConfPath + ` ` + StubsManifest + ` ` + WindowsPathFile + ` ` + WSLEnvFile + ` ` + GuardScriptPath + ` ` + GuardUnitPath + ` ` + GuardAptPath + `; do
  [ -f "$f" ] && echo "file $f $(sha256sum < "$f" | cut -d' ' -f1)"
done
[ -f ` + TokenPath + ` ] && echo "tokenmode $(stat -c %a ` + TokenPath + `)"
[ -L ` + LabpathPath + ` ] && echo "labpath $(readlink ` + LabpathPath + `)"
[ -L ` + WslpathPath + ` ] && echo "wslpath $(readlink ` + WslpathPath + `)"
[ -f ` + WSLConfPath + ` ] && { head -c 65536 ` + WSLConfPath + ` | sed 's/^/wslconf /'; echo; }
# register exists once binfmt_misc is mounted; with systemd the dir is an automount that
# this access mounts (/proc/mounts shows autofs there until then).
[ -e ` + BinfmtDir + `/register ] && echo "binfmt mounted"
[ -d /run/systemd/system ] && echo "systemd yes"
[ -d /run/systemd/system ] && systemctl is-enabled ` + guardUnitName + ` >/dev/null 2>&1 && echo "guard enabled"
[ -d /etc/apt/apt.conf.d ] && echo "apt yes"
grep -q 'profile\.d' ` + ProfilePath + ` 2>/dev/null && echo "profilehook yes"
[ -f ` + SSHDConfigPath + ` ] && echo "sshd yes"
grep '^SetEnv ' ` + SSHDConfigPath + ` 2>/dev/null | head -n 1 | sed 's/^/sshdpath /'
`)
	for _, r := range rules {
		f := BinfmtDir + "/" + r.Name
		fmt.Fprintf(&b, "[ -f %s ] && echo \"rule %s $(tr '\\n' '|' < %s)\"\n", f, r.Name, f)
	}
	b.WriteString(`awk '$3 == "9p" { print "mount " $1 " " $2 }' /proc/mounts 2>/dev/null
[ -f ` + StubsManifest + ` ] && echo "manifest $(tr '\n' ' ' < ` + StubsManifest + `)"
for n in $( { echo ` + strings.Join(quoteAll(names), " ") + `; cat ` + StubsManifest + ` 2>/dev/null; } | sort -u); do
  f=` + StubDir + `/$n
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -f "$f" ] && [ ! -L "$f" ]; then
    echo "entry $n $(head -c 32 "$f" | od -An -tx1 | tr -d ' \n') $(sha256sum < "$f" | cut -d' ' -f1)"
  else
    echo "entry $n - -"
  fi
done
true
`)
	return b.String()
}

func probe(ctx context.Context, g Guest, rules []Rule, magic []byte, names []string) (*state, error) {
	var out, errb bytes.Buffer
	code, err := g.Run(ctx, probeScript(rules, names), nil, &out, &errb)
	if err != nil {
		return nil, fmt.Errorf("provision: probe the guest: %w", err)
	}
	if code != 0 {
		return nil, fmt.Errorf("provision: probe the guest: status %d: %s", code, strings.TrimSpace(errb.String()))
	}
	return parseProbe(out.String(), magic)
}

// parseProbe reads the probe's output. magic, when non-nil, sorts StubDir entries into
// stubs and others (parseState does it later otherwise).
func parseProbe(out string, magic []byte) (*state, error) {
	st := &state{
		files:  map[string]string{},
		rules:  map[string]ruleProbe{},
		mounts: map[string]string{},
		stubs:  map[string]string{},
		others: map[string]bool{},
	}
	entries := map[string][2]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var wslConf strings.Builder
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "wslconf "); ok {
			wslConf.WriteString(rest + "\n")
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "arch" && len(f) == 2:
			ga, ok := goarchOf(f[1])
			if !ok {
				return nil, fmt.Errorf("provision: guest architecture %q is not one lab builds an interpreter for", f[1])
			}
			st.goarch = ga
		case f[0] == "file" && len(f) == 3:
			st.files[f[1]] = f[2]
		case f[0] == "tokenmode" && len(f) == 2:
			st.tokenMode = f[1]
		case f[0] == "labpath" && len(f) == 2:
			st.labpath = f[1]
		case f[0] == "wslpath" && len(f) == 2:
			st.wslpath = f[1]
		case f[0] == "binfmt":
			st.binfmtMounted = true
		case f[0] == "systemd":
			st.systemd = true
		case f[0] == "guard":
			st.guardEnabled = true
		case f[0] == "apt":
			st.apt = true
		case f[0] == "profilehook":
			st.profileHook = true
		case f[0] == "sshd":
			st.sshdConfig = true
		case f[0] == "sshdpath" && len(f) >= 2:
			st.sshdPath = strings.Join(f[1:], " ")
		case f[0] == "rule" && len(f) >= 2:
			text := strings.ReplaceAll(strings.Join(f[2:], " "), "|", "\n")
			rs, err := ParseRuleStatus(text)
			st.rules[f[1]] = ruleProbe{rs, err}
		case f[0] == "mount" && len(f) == 3:
			st.mounts[f[2]] = f[1]
		case f[0] == "manifest":
			st.manifest = f[1:]
		case f[0] == "entry" && len(f) == 4:
			entries[f[1]] = [2]string{f[2], f[3]}
		}
	}
	if st.goarch == "" {
		return nil, fmt.Errorf("provision: probe the guest: no architecture in its answer %q", abbrev(out))
	}
	st.entries = entries
	st.wslConf = wslConf.String()
	if magic != nil {
		st.sortEntries(magic)
	}
	return st, nil
}

func (st *state) sortEntries(magic []byte) {
	for name, e := range st.entries {
		head, _ := hex.DecodeString(e[0])
		if bytes.HasPrefix(head, magic) {
			st.stubs[name] = e[1]
		} else {
			st.others[name] = true
		}
	}
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = shquote(n)
	}
	return out
}

// goarchOf maps `uname -m` to Go's GOARCH.
func goarchOf(machine string) (string, bool) {
	switch machine {
	case "x86_64":
		return "amd64", true
	case "aarch64", "arm64":
		return "arm64", true
	case "i386", "i486", "i586", "i686":
		return "386", true
	case "armv6l", "armv7l":
		return "arm", true
	case "riscv64", "ppc64le", "s390x", "loong64":
		return machine, true
	}
	return "", false
}

// FindInterpreter finds lab-interop built for goarch: "lab-interop-<goarch>" or, for the
// host's own GOARCH, "lab-interop", next to the running executable (make build puts both
// in bin/), then in $LAB_INTEROP_DIR.
func FindInterpreter(goarch string) (string, error) {
	names := []string{"lab-interop-" + goarch}
	if goarch == runtime.GOARCH {
		names = append(names, "lab-interop")
	}
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	if d := os.Getenv("LAB_INTEROP_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		for _, n := range names {
			p := filepath.Join(d, n)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("provision: no interpreter for a %s guest (looked for %s in %s): run `make build`, or `CGO_ENABLED=0 GOARCH=%s go build -o bin/lab-interop-%s ./cmd/lab-interop`",
		goarch, strings.Join(names, ", "), strings.Join(dirs, ", "), goarch, goarch)
}
