package host

import (
	"slices"
	"testing"
)

func TestWindowsEnv(t *testing.T) {
	const prefix = "/data/lab/vm/wine"
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{"no LABENV", []string{"P=/data/lab/vm/wine/drive_c/x"}, []string{"P=/data/lab/vm/wine/drive_c/x"}},
		{"path under drive_c", []string{"LABENV=P/p", "P=/data/lab/vm/wine/drive_c/users/Public"},
			[]string{"LABENV=P/p", `P=C:\users\Public`}},
		{"drive_c itself", []string{"LABENV=P/p", "P=/data/lab/vm/wine/drive_c"}, []string{"LABENV=P/p", `P=C:\`}},
		{"other host path", []string{"LABENV=P/p", "P=/home/me/a b/"}, []string{"LABENV=P/p", `P=Z:\home\me\a b\`}},
		{"relative", []string{"LABENV=P/p", "P=sub/dir"}, []string{"LABENV=P/p", `P=sub\dir`}},
		{"list", []string{"LABENV=L/l:Q", "L=/data/lab/vm/wine/drive_c/windows:/tmp:", "Q=/tmp"},
			[]string{"LABENV=L/l:Q", `L=C:\windows;Z:\tmp;`, "Q=/tmp"}},
		{"not a sibling prefix", []string{"LABENV=P/p", "P=/data/lab/vm/wine/drive_cx"}, []string{"LABENV=P/p", `P=Z:\data\lab\vm\wine\drive_cx`}},
		{"guest-only flag", []string{"LABENV=P/pu", "P=/tmp"}, []string{"LABENV=P/pu", "P=/tmp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := windowsEnv(tt.env, prefix); !slices.Equal(got, tt.want) {
				t.Errorf("windowsEnv(%q) = %q, want %q", tt.env, got, tt.want)
			}
		})
	}
}
