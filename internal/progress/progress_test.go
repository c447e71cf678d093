package progress

import (
	"bytes"
	"testing"
)

// Without a terminal every step is plain lines: what a log or CI shows.
func TestLines(t *testing.T) {
	var out bytes.Buffer
	p := New(&out)
	b := p.Bar("unpacking 2 packages", 100, "bytes")
	b.Add(50)
	b.Set(100)
	b.Done("unpacked")
	b.Finish() // a step ends once
	w := p.Wait("lab: booting x")
	w.Done("lab: x is ready (%.1fs)", 1.5)
	s := p.Wait("lab: booting y")
	s.Stop()
	p.Line("built %s", "dir")
	want := "unpacking 2 packages...\nunpacked\nlab: booting x...\nlab: x is ready (1.5s)\nlab: booting y...\nbuilt dir\n"
	if out.String() != want {
		t.Errorf("output:\n%q\nwant:\n%q", out.String(), want)
	}
}

func TestSilent(t *testing.T) {
	var p *Progress
	p.Line("x")
	p.Bar("x", 1, "").Finish()
	New(nil).Wait("x").Done("y")
}
