package scenarios

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite testdata/README.md")

func TestReadme(t *testing.T) {
	var b bytes.Buffer
	if err := WriteReadme(&b); err != nil {
		t.Fatal(err)
	}
	if *updateReadme {
		if err := os.WriteFile("testdata/README.md", b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/README.md")
	if err != nil || !bytes.Equal(got, b.Bytes()) {
		t.Fatalf("testdata/README.md is stale: go test ./scenarios -run TestReadme -update-readme")
	}
}
