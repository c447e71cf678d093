package provision

import (
	"testing"

	"lab/formats"
)

func TestFormatRules(t *testing.T) {
	magic, mask, _ := formats.QEMUELF("aarch64")
	rules := FormatRules([]formats.Format{
		{Name: "labsh", Extension: "labsh"},
		{Name: "labpy", Offset: 1, Magic: []byte("!labpy")},
		{Name: "arm64", Magic: magic, Mask: mask},
	})
	want := []string{
		":lab-labsh:E::labsh::/usr/local/lib/lab/interop:POF",
		":lab-labpy:M:1:!labpy::/usr/local/lib/lab/interop:POF",
		`:lab-arm64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/local/lib/lab/interop:POF`,
	}
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
		if r.String() != want[i] {
			t.Errorf("rule %d:\n got  %s\n want %s", i, r.String(), want[i])
		}
	}
	// The kernel's view of an extension rule, as /proc/sys/fs/binfmt_misc/lab-labsh shows it.
	st, err := ParseRuleStatus("enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\nextension .labsh\n")
	if err != nil {
		t.Fatal(err)
	}
	if m := rules[0].Mismatch(st); m != "" {
		t.Errorf("mismatch %q", m)
	}
	st.Extension = "sh"
	if m, want := rules[0].Mismatch(st), `extension "sh", want "labsh"`; m != want {
		t.Errorf("mismatch %q, want %q", m, want)
	}
	if m, want := DefaultRules(testMagic, true)[0].Mismatch(st), `extension "sh", want ""`; m != want {
		t.Errorf("pe vs an extension rule: %q, want %q", m, want)
	}
}
