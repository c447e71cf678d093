package labtest

import (
	"fmt"
	"runtime"
	"testing"
)

// recorder stands in for a test: it records how the helper ended it.
type recorder struct {
	testing.TB
	how, msg string
}

func (r *recorder) Helper() {}
func (r *recorder) end(how, format string, args ...any) {
	r.how, r.msg = how, fmt.Sprintf(format, args...)
	runtime.Goexit() // as testing's SkipNow and FailNow do
}
func (r *recorder) Skipf(format string, args ...any)  { r.end("skip", format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.end("fatal", format, args...) }
func (r *recorder) Errorf(format string, args ...any) {
	r.how, r.msg = "error", fmt.Sprintf(format, args...)
}
func (r *recorder) Logf(format string, args ...any) {
	r.how, r.msg = "log", fmt.Sprintf(format, args...)
}

func run(f func(tb testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestNeed(t *testing.T) {
	tests := []struct {
		require  string
		tools    []string
		how, msg string
	}{
		{"", []string{"sh"}, "", ""},
		{"1", []string{"sh", "/"}, "", ""},
		{"", []string{"sh", "lab-no-such-tool"}, "skip", "skipped: lab-no-such-tool not found (run make deps, or set LAB_REQUIRE_VM=1 to make this a failure)"},
		{"0", []string{"/lab/no/such/firmware.rom"}, "skip", "skipped: /lab/no/such/firmware.rom not found (run make deps, or set LAB_REQUIRE_VM=1 to make this a failure)"},
		{"1", []string{"lab-no-such-tool"}, "fatal", "lab-no-such-tool not found (LAB_REQUIRE_VM is set: this is a failure; run make deps)"},
	}
	for _, tt := range tests {
		t.Run(tt.require+fmt.Sprint(tt.tools), func(t *testing.T) {
			t.Setenv("LAB_REQUIRE_VM", tt.require)
			r := run(func(tb testing.TB) { Need(tb, tt.tools...) })
			if r.how != tt.how || r.msg != tt.msg {
				t.Errorf("Need(%q) with LAB_REQUIRE_VM=%q: %s %q; want %s %q", tt.tools, tt.require, r.how, r.msg, tt.how, tt.msg)
			}
		})
	}
}

func TestHave(t *testing.T) {
	for _, tt := range []struct {
		require string
		want    bool
		how     string
	}{{"", false, "log"}, {"1", false, "error"}} {
		t.Setenv("LAB_REQUIRE_VM", tt.require)
		var got bool
		r := run(func(tb testing.TB) { got = Have(tb, "lab-no-such-tool") })
		if got != tt.want || r.how != tt.how {
			t.Errorf("Have with LAB_REQUIRE_VM=%q = %v (%s %q), want %v and a %s", tt.require, got, r.how, r.msg, tt.want, tt.how)
		}
	}
	if !Have(t, "sh") {
		t.Error("Have(sh) = false")
	}
}
