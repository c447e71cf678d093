package host

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"lab/wire"
)

func TestParseLabEnv(t *testing.T) {
	got := ParseLabEnv("A:B/p:C/l:D/u:E/w:F/up:G/x:H/pw::/p:I=J/p:K/wu")
	want := []EnvVar{
		{Name: "A", ToGuest: true, ToHost: true},
		{Name: "B", Path: true, ToGuest: true, ToHost: true},
		{Name: "C", PathList: true, ToGuest: true, ToHost: true},
		{Name: "D", ToGuest: true},
		{Name: "E", ToHost: true},
		{Name: "F", Path: true, ToGuest: true},
		{Name: "H", Path: true, ToHost: true},
		{Name: "K", ToGuest: true, ToHost: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLabEnv:\n got %+v\nwant %+v", got, want)
	}
}

func TestHostEnv(t *testing.T) {
	c, share, _ := testConfig(t)
	base := []string{"PATH=/usr/bin", "HOME=/home/u", "KEEP=1", "GONE=old", "D=host"}
	sent := []wire.EnvVar{
		{Name: "LABENV", Value: "A:P/p:L/l:D/u:W/w:GONE:NOTSENT/p"},
		{Name: "A", Value: "a b=c"},
		{Name: "P", Value: "/mnt/host/dir/sub", Flags: wire.EnvPath},
		{Name: "L", Value: "/mnt/host/bin:/usr/lib:rel", Flags: wire.EnvPathList},
		{Name: "D", Value: "guest-only-to-guest"},
		{Name: "W", Value: "w"},
		{Name: "GONE", Flags: wire.EnvUnset},
		{Name: "SNEAKY", Value: "not named in LABENV"},
		{Name: "PATH", Value: "/guest/bin"},
	}
	got := hostEnv(base, sent, c.guestToHostPath)
	want := []string{
		"PATH=/usr/bin", "HOME=/home/u", "KEEP=1", "D=host",
		"LABENV=A:P/p:L/l:D/u:W/w:GONE:NOTSENT/p",
		"A=a b=c",
		"P=" + share + "/dir/sub",
		"L=" + share + "/bin:/usr/lib:rel",
		"W=w",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hostEnv:\n got %q\nwant %q", got, want)
	}
	// No LABENV: nothing crosses, not even what was sent.
	got = hostEnv(base, sent[1:], c.guestToHostPath)
	if !reflect.DeepEqual(got, base) {
		t.Errorf("without LABENV: got %q, want the base %q", got, base)
	}
	for _, kv := range got {
		if strings.HasPrefix(kv, "SNEAKY=") {
			t.Error("a variable LABENV does not name crossed")
		}
	}
}

// TestEnvPolicyDenies: every variable that can make a host program run code the guest
// chose is refused, by name, whatever else LABENV names.
func TestEnvPolicyDenies(t *testing.T) {
	hostile := []struct{ name, value, class string }{
		{"LD_PRELOAD", "/mnt/host/evil.so", "dynamic loader"},
		{"LD_AUDIT", "/mnt/host/evil.so", "dynamic loader"},
		{"LD_LIBRARY_PATH", "/mnt/host", "dynamic loader"},
		{"GCONV_PATH", "/mnt/host", "dynamic loader"},
		{"GLIBC_TUNABLES", "glibc.malloc.check=3", "dynamic loader"},
		{"MALLOC_TRACE", "/home/u/.bashrc", "dynamic loader"},
		{"LOCPATH", "/mnt/host", "dynamic loader"},
		{"NLSPATH", "/mnt/host/%N", "dynamic loader"},
		{"HOSTALIASES", "/etc/shadow", "dynamic loader"},
		{"BASH_ENV", "/dev/stdin", "shell startup"},
		{"ENV", "/dev/stdin", "shell startup"},
		{"BASH_FUNC_echo%%", "() { id; }", "shell startup"},
		{"ls", "() { id; }", "shell startup"}, // pre-2014 bash imported any such value
		{"SHELLOPTS", "xtrace", "shell startup"},
		{"BASHOPTS", "extdebug", "shell startup"},
		{"PS4", "$(id)", "shell startup"},
		{"PROMPT_COMMAND", "id", "shell startup"},
		{"IFS", "/", "shell startup"},
		{"HOME", "/mnt/host", "shell startup"},
		{"PYTHONSTARTUP", "/mnt/host/x.py", "interpreter options"},
		{"PYTHONPATH", "/mnt/host", "interpreter options"},
		{"PYTHONHOME", "/mnt/host", "interpreter options"},
		{"PYTHONINSPECT", "1", "interpreter options"},
		{"PERL5LIB", "/mnt/host", "interpreter options"},
		{"PERL5OPT", "-Mevil", "interpreter options"},
		{"PERLLIB", "/mnt/host", "interpreter options"},
		{"RUBYOPT", "-revil", "interpreter options"},
		{"RUBYLIB", "/mnt/host", "interpreter options"},
		{"NODE_OPTIONS", "--require /mnt/host/x.js", "interpreter options"},
		{"NODE_PATH", "/mnt/host", "interpreter options"},
		{"JAVA_TOOL_OPTIONS", "-javaagent:/mnt/host/a.jar", "interpreter options"},
		{"_JAVA_OPTIONS", "-javaagent:/mnt/host/a.jar", "interpreter options"},
		{"JDK_JAVA_OPTIONS", "-javaagent:/mnt/host/a.jar", "interpreter options"},
		{"PATH", "/mnt/host/bin", "program in a variable"},
		{"GIT_SSH_COMMAND", "id", "program in a variable"},
		{"GIT_CONFIG_COUNT", "1", "program in a variable"},
		{"EDITOR", "sh -c id", "program in a variable"},
		{"PAGER", "sh -c id", "program in a variable"},
		{"DBUS_SESSION_BUS_ADDRESS", "unixexec:path=/bin/sh", "program in a variable"},
		{"WINEDLLPATH", "/mnt/host", "library plugins"},
		{"WINELOADER", "/mnt/host/evil", "library plugins"},
		{"WINEPREFIX", "/mnt/host/prefix", "library plugins"},
		{"OPENSSL_CONF", "/mnt/host/engine.cnf", "library plugins"},
		{"GIO_EXTRA_MODULES", "/mnt/host", "library plugins"},
		{"DISPLAY", "10.0.2.2:0", "host desktop"},
		{"WAYLAND_DISPLAY", "/mnt/host/wl", "host desktop"},
		{"XAUTHORITY", "/mnt/host/cookie", "host desktop"},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			for _, spec := range []string{h.name, "FOO:" + h.name + "/p", "FOO:" + h.name + "/w", "FOO:" + h.name + "/l"} {
				sent := []wire.EnvVar{{Name: "LABENV", Value: spec}, {Name: "FOO", Value: "ok"}, {Name: h.name, Value: h.value}}
				err := checkEnvPolicy(sent, nil)
				var de *EnvDeniedError
				if !errors.As(err, &de) || de.Name != h.name || de.Class != h.class {
					t.Fatalf("LABENV=%s: %v, want %s refused (%s)", spec, err, h.name, h.class)
				}
				if want := "host: variable " + h.name + " may not cross to the host (" + h.class + ")"; err.Error() != want {
					t.Errorf("error %q, want %q", err, want)
				}
				// The host owner's allow list lets it through, by name or prefix.
				if err := checkEnvPolicy(sent, []string{"OTHER", h.name}); err != nil {
					t.Errorf("allowed by name: %v", err)
				}
				if err := checkEnvPolicy(sent, []string{h.name[:1] + "*"}); err != nil {
					t.Errorf("allowed by prefix %s*: %v", h.name[:1], err)
				}
			}
		})
	}
}

// TestEnvPolicyLets: ordinary variables cross; a denied name that does not cross (not
// named, /u only, unset in the guest, no LABENV) is no reason to refuse.
func TestEnvPolicyLets(t *testing.T) {
	cases := []struct {
		name string
		sent []wire.EnvVar
	}{
		{"ordinary", []wire.EnvVar{{Name: "LABENV", Value: "LANG:TERM:P/p:MYAPP_HOME/p:LDX:PATHX"}, {Name: "LANG", Value: "C.UTF-8"},
			{Name: "TERM", Value: "xterm"}, {Name: "P", Value: "/mnt/host/x"}, {Name: "MYAPP_HOME", Value: "/x"}, {Name: "LDX", Value: "1"}, {Name: "PATHX", Value: "1"}}},
		{"sent but not named", []wire.EnvVar{{Name: "LABENV", Value: "A"}, {Name: "A", Value: "1"}, {Name: "LD_PRELOAD", Value: "/x.so"}}},
		{"no LABENV", []wire.EnvVar{{Name: "LD_PRELOAD", Value: "/x.so"}}},
		{"guest-only", []wire.EnvVar{{Name: "LABENV", Value: "LD_PRELOAD/u"}, {Name: "LD_PRELOAD", Value: "/x.so"}}},
		{"unset in the guest", []wire.EnvVar{{Name: "LABENV", Value: "LD_PRELOAD:PATH/l"}, {Name: "LD_PRELOAD", Flags: wire.EnvUnset}, {Name: "PATH", Flags: wire.EnvUnset}}},
		{"unknown flag", []wire.EnvVar{{Name: "LABENV", Value: "LD_PRELOAD/x"}, {Name: "LD_PRELOAD", Value: "/x.so"}}},
	}
	for _, tt := range cases {
		if err := checkEnvPolicy(tt.sent, nil); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestEnvAllowValidated(t *testing.T) {
	for _, bad := range []string{"", "*", "A=B", "A\x00"} {
		c := Config{Token: []byte("0123456789abcdef"), EnvAllow: []string{bad}}
		_, err := c.withDefaults()
		want := fmt.Sprintf("host: allowed variable %q: want a variable name, or a prefix ending in *", bad)
		if err == nil || err.Error() != want {
			t.Errorf("EnvAllow %q: %v, want %q", bad, err, want)
		}
	}
}
