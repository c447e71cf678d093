package bench

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"testing"
)

func chartResult() *Result {
	r := &Result{Accel: "tcg", Vsock: "user"}
	r.Launch.Interop = Dist{N: 10, P50: 40, P99: 80}
	r.Launch.GuestNative = Dist{N: 10, P50: 20, P99: 30}
	r.Launch.HostNative = Dist{N: 10, P50: 12, P99: 14}
	r.Boot.TotalSeconds = 6
	r.Aims = r.aims()
	return r
}

// The SVG parses, and its bars sit where the figures put them: on the launch scale
// (largest value there: interop's p99, 80 ms, over 500 px) p50 40 ms is 250 px and the
// aim 1.25 x (20 + 12) = 40 ms as well.
func TestChartSVG(t *testing.T) {
	var b bytes.Buffer
	if err := chartResult().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name
		Rects   []struct {
			Class string  `xml:"class,attr"`
			X     float64 `xml:"x,attr"`
			Y     float64 `xml:"y,attr"`
			W     float64 `xml:"width,attr"`
		} `xml:"rect"`
		Texts []string `xml:"text"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil || doc.XMLName.Local != "svg" {
		t.Fatalf("SVG does not parse: %v\n%s", err, b.String())
	}
	scale := float64(chartWidth-chartLeft-chartRight) / 80
	var p50, p99, aim bool
	for _, r := range doc.Rects {
		switch {
		case r.Class == "p50" && r.W == 40*scale:
			p50 = true
		case r.Class == "p99" && r.W == 80*scale:
			p99 = true
		case r.Class == "aim" && r.X == chartLeft+40*scale-1:
			aim = true
		}
	}
	if !p50 || !p99 || !aim {
		t.Errorf("interop launch bars: p50 %v, p99 %v, aim mark %v; rects %+v", p50, p99, aim, doc.Rects)
	}
	want := "p50 40.00 / p99 80.00 ms (aim 40.00)"
	found := false
	for _, s := range doc.Texts {
		found = found || s == want
	}
	if !found {
		t.Errorf("no text %q in %q", want, doc.Texts)
	}
}

// The PNG decodes, at the layout's size, with the bars' colours where the layout puts them.
func TestChartPNG(t *testing.T) {
	r := chartResult()
	var b bytes.Buffer
	if err := r.WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	lay := layoutChart(r.chart())
	if got := img.Bounds().Size(); got.X != chartWidth || got.Y != lay.height {
		t.Fatalf("size %v; want %dx%d", got, chartWidth, lay.height)
	}
	for _, it := range lay.items {
		if it.kind != "p50" || it.w < 4 {
			continue
		}
		got := img.At(int(it.x)+1, int(it.y)+1)
		if r, g, bl, _ := got.RGBA(); uint8(r>>8) != chartColors["p50"].R || uint8(g>>8) != chartColors["p50"].G || uint8(bl>>8) != chartColors["p50"].B {
			t.Errorf("pixel in the p50 bar at (%.0f,%.0f) is %v", it.x+1, it.y+1, got)
		}
		return
	}
	t.Fatal("no p50 bar in the layout")
}
