package shell

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestJoin(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"uname", "-r"}, "uname -r"},
		{[]string{"qemu", "-m", "1024"}, "qemu -m 1024"},
		{[]string{"sh", "-c", "echo $HOME; exit 3"}, `sh -c 'echo $HOME; exit 3'`},
		{[]string{"-append", "console=ttyS0 quiet"}, "-append 'console=ttyS0 quiet'"},
		{[]string{"it's"}, `'it'\''s'`},
		{[]string{""}, "''"},
		{[]string{"hostfwd=tcp:127.0.0.1:1-:22,x=y"}, "hostfwd=tcp:127.0.0.1:1-:22,x=y"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := Join(tt.in); got != tt.want {
			t.Errorf("Join(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":         "''",
		"/mnt/lab": "'/mnt/lab'",
		"it's":     `'it'\''s'`,
		"a b":      "'a b'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %q, want %q", in, got, want)
		}
	}
}

// The real shell reads Join's line back as the same words.
func TestJoinRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	argv := []string{"plain", "", "two words", "it's", `"dq"`, "$HOME", "`id`", "a\nb", "*", "~", "x;y", `back\slash`, "-n"}
	out, err := exec.Command(sh, "-c", "set -- "+Join(argv)+`; for a; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, argv) {
		t.Errorf("sh read back %q, want %q", got, argv)
	}
}
