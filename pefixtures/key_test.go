package pefixtures

import (
	"strings"
	"testing"
)

func TestCacheKey(t *testing.T) {
	files, err := sources()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(files["go.mod"]), "go 1.21\n") {
		t.Errorf("go.mod = %q: the fixtures module must say go 1.21 for the old toolchain", files["go.mod"])
	}
	for _, n := range Names {
		dir := strings.TrimSuffix(n, ".exe")
		if _, ok := files[dir+"/main.go"]; !ok {
			t.Errorf("no source for %s", n)
		}
	}
	k := cacheKey("go1.21.4", files)
	if k != cacheKey("go1.21.4", files) {
		t.Error("key not stable")
	}
	if k == cacheKey("go1.20.14", files) {
		t.Error("key ignores the toolchain")
	}
	changed := map[string][]byte{}
	for n, b := range files {
		changed[n] = b
	}
	changed["cat/main.go"] = append([]byte(nil), append(files["cat/main.go"], '\n')...)
	if k == cacheKey("go1.21.4", changed) {
		t.Error("key ignores a source change")
	}
}
