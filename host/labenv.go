package host

import (
	"fmt"
	"path/filepath"
	"strings"

	"lab/wire"
)

// EnvVar is one entry of LABENV, which has WSLENV's syntax: a colon-separated list of
// NAME or NAME/FLAGS entries.
//
// The flags keep WSL's meaning with the guest in WSL's (Linux) role and the host in
// Windows' role:
//
//	p  the value is a path: translated between guest and host paths
//	l  the value is a colon-separated list of paths, each translated
//	u  only when the host runs a guest program (host -> guest), WSL's "from Win32 to WSL"
//	w  only when the guest runs a host program (guest -> host), WSL's "from WSL to Win32"
//
// An entry with an unknown flag is skipped, as WSL does.
type EnvVar struct {
	Name            string
	Path, PathList  bool
	ToGuest, ToHost bool // which directions it crosses (both unless u or w narrows it)
}

// LabEnvName is the variable that names what crosses.
const LabEnvName = "LABENV"

// ParseLabEnv parses a LABENV value.
func ParseLabEnv(s string) []EnvVar {
	var out []EnvVar
	for _, entry := range strings.Split(s, ":") {
		name, flags, _ := strings.Cut(entry, "/")
		if name == "" || strings.ContainsAny(name, "=\x00") {
			continue
		}
		v := EnvVar{Name: name, ToGuest: true, ToHost: true}
		ok := true
		var u, w bool
		for _, f := range flags {
			switch f {
			case 'p':
				v.Path = true
			case 'l':
				v.PathList = true
			case 'u':
				u = true
			case 'w':
				w = true
			default:
				ok = false
			}
		}
		if !ok {
			continue
		}
		if u && !w {
			v.ToHost = false
		}
		if w && !u {
			v.ToGuest = false
		}
		out = append(out, v)
	}
	return out
}

// indexSent splits what the guest sent into its LABENV (the first one; nil if none) and the
// other variables by name (the first of each name counts, as in hostEnv).
func indexSent(sent []wire.EnvVar) (labenv *wire.EnvVar, byName map[string]wire.EnvVar) {
	byName = map[string]wire.EnvVar{}
	for i, v := range sent {
		if v.Name == LabEnvName && labenv == nil {
			labenv = &sent[i]
			continue
		}
		if _, dup := byName[v.Name]; !dup {
			byName[v.Name] = v
		}
	}
	return labenv, byName
}

// hostEnv builds a host program's environment: base, then the variables the guest sent
// that its LABENV lets cross to the host, with /p and /l values translated by translate.
//
// The relay parses the LABENV value itself (it always crosses) and lets through only the
// variables it names with a guest-to-host direction, whatever else the guest sent. A named
// variable the guest marks unset is removed from the result (WSL sends it as NAME= and Windows
// deletes the key).
func hostEnv(base []string, sent []wire.EnvVar, translate func(string) string) []string {
	labenv, byName := indexSent(sent)
	set := map[string]string{} // name -> value to set
	drop := map[string]bool{}  // names to remove
	var order []string
	if labenv != nil && labenv.Flags&wire.EnvUnset == 0 {
		set[LabEnvName] = labenv.Value
		order = append(order, LabEnvName)
		for _, v := range ParseLabEnv(labenv.Value) {
			if !v.ToHost || v.Name == LabEnvName {
				continue
			}
			got, ok := byName[v.Name]
			if !ok || got.Flags&wire.EnvUnset != 0 {
				if _, s := set[v.Name]; !s {
					drop[v.Name] = true
				}
				continue
			}
			val := got.Value
			switch {
			case v.PathList:
				parts := strings.Split(val, ":")
				for i, p := range parts {
					parts[i] = translate(p)
				}
				val = strings.Join(parts, ":")
			case v.Path:
				val = translate(val)
			}
			if _, dup := set[v.Name]; !dup {
				order = append(order, v.Name)
			}
			delete(drop, v.Name)
			set[v.Name] = val
		}
	}
	out := make([]string, 0, len(base)+len(order))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, s := set[k]; s || drop[k] {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range order {
		out = append(out, k+"="+set[k])
	}
	return out
}

// windowsEnv rewrites, for a Windows (PE) program run by Wine in prefix, the values that
// LABENV marks /p or /l (hostEnv already made them host paths) into Windows paths, as
// WSLENV's /p and /l give Win32 programs Windows paths: a host path under the prefix's
// drive_c becomes C:\..., any other absolute path Z:\... (Wine's drive for the whole host
// file system), a relative path keeps its text with backslashes; /l lists are joined with
// ';'. Everything else in env is unchanged.
func windowsEnv(env []string, prefix string) []string {
	labenv, ok := lookupEnv(env, LabEnvName)
	if !ok {
		return env
	}
	kinds := map[string]byte{}
	for _, v := range ParseLabEnv(labenv) {
		switch {
		case !v.ToHost:
		case v.PathList:
			kinds[v.Name] = 'l'
		case v.Path:
			kinds[v.Name] = 'p'
		}
	}
	if len(kinds) == 0 {
		return env
	}
	driveC := []string{filepath.Join(prefix, "drive_c")}
	if real, err := filepath.EvalSymlinks(driveC[0]); err == nil && real != driveC[0] {
		driveC = append(driveC, real)
	}
	out := make([]string, len(env))
	for i, kv := range env {
		out[i] = kv
		k, val, _ := strings.Cut(kv, "=")
		switch kinds[k] {
		case 'p':
			out[i] = k + "=" + windowsPath(val, driveC)
		case 'l':
			parts := strings.Split(val, ":")
			for j, p := range parts {
				parts[j] = windowsPath(p, driveC)
			}
			out[i] = k + "=" + strings.Join(parts, ";")
		}
	}
	return out
}

// windowsPath is the Windows path of host path p in a prefix whose drive_c is one of
// driveC (see windowsEnv); "" stays "".
func windowsPath(p string, driveC []string) string {
	if p == "" {
		return p
	}
	if !filepath.IsAbs(p) {
		return strings.ReplaceAll(p, "/", `\`)
	}
	trail := strings.HasSuffix(p, "/") && p != "/"
	c := filepath.Clean(p)
	var w string
	for _, d := range driveC {
		if c == d {
			w = `C:\`
			break
		}
		if rest, ok := strings.CutPrefix(c, d+"/"); ok {
			w = `C:\` + strings.ReplaceAll(rest, "/", `\`)
			break
		}
	}
	if w == "" {
		w = `Z:\` + strings.ReplaceAll(strings.TrimPrefix(c, "/"), "/", `\`)
	}
	if trail && !strings.HasSuffix(w, `\`) {
		w += `\`
	}
	return w
}

// envDenied is the built-in list of variables a guest may not set in a host program's
// environment: each can make a host program run code the guest chose, or read files the
// guest chose as configuration, without the guest needing a share. A name matches an
// entry exactly, or an entry ending in "*" by prefix. Config.EnvAllow overrides it name by
// name. docs/DESIGN.md ("Environment policy") gives the reason for each class.
var envDenied = []struct {
	class   string
	entries []string
}{
	// The dynamic loader and glibc: what ld.so itself ignores for setuid programs
	// (glibc's unsecvars.h), plus the tunables and malloc hooks.
	{"dynamic loader", []string{"LD_*", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES",
		"HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_*", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF",
		"RES_OPTIONS", "TMPDIR", "TZDIR"}},
	// Shells: startup files, exported functions, options and prompts that are evaluated.
	{"shell startup", []string{"BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "BASH_XTRACEFD",
		"BASH_LOADABLES_PATH", "PS0", "PS1", "PS2", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH", "GLOBIGNORE",
		"FPATH", "ZDOTDIR", "INPUTRC", "HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS"}},
	// Interpreters: module paths and options that load or run code at start.
	{"interpreter options", []string{"PYTHON*", "PERL*", "RUBY*", "GEM_*", "NODE_*", "ELECTRON_RUN_AS_NODE",
		"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH", "LUA_*", "TCLLIBPATH",
		"PHPRC", "PHP_INI_SCAN_DIR"}},
	// Programs that run a command named in a variable (often through a shell).
	{"program in a variable", []string{"PATH", "SHELL", "EDITOR", "VISUAL", "PAGER", "MANPAGER", "BROWSER",
		"LESSOPEN", "LESSCLOSE", "GIT_*", "SSH_ASKPASS", "SUDO_ASKPASS", "DBUS_*"}},
	// Plugin and module paths of libraries host programs load.
	{"library plugins", []string{"WINE*", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
		"GIO_EXTRA_MODULES", "GIO_MODULE_DIR", "GI_TYPELIB_PATH", "GTK_PATH", "GTK_MODULES", "GTK2_MODULES",
		"GTK3_MODULES", "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH", "GST_PLUGIN_PATH",
		"GST_PLUGIN_SYSTEM_PATH"}},
	// The host's desktop: which display server (and credentials) host programs use is the
	// hostagent's own; a guest's value would point them at a server or cookie it chose.
	{"host desktop", []string{"DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY"}},
}

// matchEnvName reports whether name matches pattern: exactly, or by prefix for a pattern
// ending in "*".
func matchEnvName(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

// envDenyClass returns the class of the deny list entry name matches, or "" when the guest
// may set it. Names that bash imports as functions are denied whatever their spelling:
// BASH_FUNC_x%% today, and any value starting with "() {" for older shells.
func envDenyClass(name, value string) string {
	if strings.Contains(name, "%%") || strings.HasPrefix(value, "() {") {
		return "shell startup"
	}
	for _, c := range envDenied {
		for _, p := range c.entries {
			if matchEnvName(p, name) {
				return c.class
			}
		}
	}
	return ""
}

// EnvDeniedError is a variable the host policy does not let cross to the host.
type EnvDeniedError struct {
	Name  string
	Class string // why: the deny list's class
}

func (e *EnvDeniedError) Error() string {
	return fmt.Sprintf("host: variable %s may not cross to the host (%s)", e.Name, e.Class)
}

// checkEnvPolicy returns an *EnvDeniedError for the first variable that the guest's LABENV
// would set in the host program's environment and that the deny list names, unless allow
// (Config.EnvAllow: names, or prefixes ending in "*") lets it through. LABENV itself
// always crosses and names nothing to run; removing a variable (EnvUnset) is allowed.
func checkEnvPolicy(sent []wire.EnvVar, allow []string) error {
	labenv, byName := indexSent(sent)
	if labenv == nil || labenv.Flags&wire.EnvUnset != 0 {
		return nil
	}
	for _, v := range ParseLabEnv(labenv.Value) {
		if !v.ToHost || v.Name == LabEnvName {
			continue
		}
		got, ok := byName[v.Name]
		if !ok || got.Flags&wire.EnvUnset != 0 {
			continue
		}
		class := envDenyClass(v.Name, got.Value)
		if class == "" || envAllowed(v.Name, allow) {
			continue
		}
		return &EnvDeniedError{Name: v.Name, Class: class}
	}
	return nil
}

func envAllowed(name string, allow []string) bool {
	for _, p := range allow {
		if matchEnvName(p, name) {
			return true
		}
	}
	return false
}
