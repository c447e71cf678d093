package machine

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"lab/formats"
	"lab/guest"
	"lab/provision"
)

// A lab file's formats reach the guest's interop.conf in a form the interpreter reads back
// as the same matches, and FileFormats round-trips.
func TestFormatsReachGuestConf(t *testing.T) {
	magic, mask, _ := formats.QEMUELF("aarch64")
	table := []formats.Format{
		{Name: "labsh", Extension: "labsh", Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/bin/sh"}}},
		{Name: "labpy", Offset: 2, Magic: []byte("labpy"), Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/usr/bin/python3", "-u"}}},
		{Name: "arm64", Magic: magic, Mask: mask, Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/usr/bin/qemu-aarch64-static"}}},
	}
	b, err := InteropConf(provision.Settings{RelayAddr: RelayAddr, TokenPath: provision.TokenPath, Formats: table})
	if err != nil {
		t.Fatal(err)
	}
	c, err := guest.ParseConfig(bytes.NewReader(b), "interop.conf")
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var want []guest.Format
	for _, f := range table {
		f.Runner = formats.Runner{}
		want = append(want, f)
	}
	if !reflect.DeepEqual(c.Formats, want) {
		t.Errorf("guest formats %+v, want %+v\n%s", c.Formats, want, b)
	}

	dir := t.TempDir()
	data, err := EncodeFormats(table)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileFormats), data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFormats(dir)
	if err != nil || !reflect.DeepEqual(got, table) {
		t.Errorf("LoadFormats = %+v, %v", got, err)
	}
	rules, err := RulesOf(dir)
	if err != nil || len(rules) != len(Rules(true))+1+3 || rules[len(rules)-3].String() != ":lab-labsh:E::labsh::/usr/local/lib/lab/interop:POF" {
		t.Errorf("RulesOf = %v, %v", rules, err)
	}
	if _, err := EncodeFormats([]formats.Format{{Name: "host", Magic: []byte("x")}}); err == nil || err.Error() != `machine: formats: "host" is a built-in format's name` {
		t.Errorf("EncodeFormats(host) = %v", err)
	}
}
