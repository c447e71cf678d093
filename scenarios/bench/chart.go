package bench

import (
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"io"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// A chart is sections of horizontal bars: p50 (dark), p99 (light, behind it) and the
// figure's aim as a red mark, so each figure is seen against its aim and its baselines.
type chartBar struct {
	label    string
	p50, p99 float64
	aim      float64 // 0: no aim on this bar
}

type chartSection struct {
	title, unit string
	bars        []chartBar
}

func (r *Result) chart() []chartSection {
	aim := map[string]float64{}
	for _, a := range r.Aims {
		if a.Measured {
			aim[a.Figure] = a.Limit
		}
	}
	l, t := r.Launch, r.Throughput
	dev := float64(deviceGuestHostMBps) * 1e6 / (1 << 20)
	secs := []chartSection{
		{fmt.Sprintf("Launch latency, ms (accel %s, vsock %s)", r.Accel, r.Vsock), "ms", []chartBar{
			{"interop launch", l.Interop.P50, l.Interop.P99, aim["interop launch of a trivial program"]},
			{"guest native", l.GuestNative.P50, l.GuestNative.P99, 0},
			{"host native", l.HostNative.P50, l.HostNative.P99, 0},
			{"guest->host SSH exec", l.SSHGuestHost.P50, l.SSHGuestHost.P99, 0},
			{"lab exec", l.LabExec.P50, l.LabExec.P99, 0},
		}},
		{"PE launch, ms", "ms", []chartBar{
			{"PE interop", l.PEInterop.P50, l.PEInterop.P99, aim["PE launch through interop"]},
			{"PE Wine on host", l.PEHost.P50, l.PEHost.P99, 0},
		}},
		{"Boot and provisioning, s", "s", []chartBar{
			{"boot to first interop", r.Boot.TotalSeconds, 0, bootAimSeconds},
			{"re-provision, unchanged", r.Reprovision.P50 / 1000, r.Reprovision.P99 / 1000, reprovAimSecs},
		}},
		{"Throughput, MiB/s", "MiB/s", []chartBar{
			{"interop stdout", t.InteropStdout.MiBps, 0, 0.8 * t.VsockHostGst.MiBps},
			{"raw vsock h->g", t.VsockHostGst.MiBps, 0, dev},
			{"SSH pipe g->h", t.SSHGstHost.MiBps, 0, 0},
			{"interop stdin", t.InteropStdin.MiBps, 0, 0.8 * t.VsockGstHost.MiBps},
			{"raw vsock g->h", t.VsockGstHost.MiBps, 0, dev},
			{"SSH pipe h->g", t.SSHHostGst.MiBps, 0, 0},
		}},
		{fmt.Sprintf("%d concurrent launches", r.Concurrent.N), "", []chartBar{
			{"correct launches", float64(r.Concurrent.OK), 0, concurrentAim},
			{"hostagent RSS, MiB", r.Concurrent.RelayRSSMiB, 0, rssAimMiB},
		}},
	}
	return secs
}

// Chart geometry, shared by the SVG and the PNG.
const (
	chartWidth                       = 1000
	chartLeft                        = 180 // labels end here
	chartRight                       = 320 // room for the figures' text
	barH, barGap, sectionGap, titleH = 18, 8, 24, 12
)

type chartLayout struct {
	height int
	items  []chartItem
}

type chartItem struct {
	kind       string // "title", "label", "p99", "p50", "aim", "value"
	x, y, w, h float64
	text       string
}

func layoutChart(secs []chartSection) chartLayout {
	var lay chartLayout
	y := 30.0
	for _, s := range secs {
		lay.items = append(lay.items, chartItem{kind: "title", x: 10, y: y, text: s.title})
		y += titleH
		max := 0.0
		for _, b := range s.bars {
			max = maxf(max, maxf(b.p50, maxf(b.p99, b.aim)))
		}
		if max == 0 {
			max = 1
		}
		scale := float64(chartWidth-chartLeft-chartRight) / max
		for _, b := range s.bars {
			lay.items = append(lay.items, chartItem{kind: "label", x: chartLeft - 8, y: y + barH - 5, text: b.label})
			if b.p99 > 0 {
				lay.items = append(lay.items, chartItem{kind: "p99", x: chartLeft, y: y, w: b.p99 * scale, h: barH})
			}
			lay.items = append(lay.items, chartItem{kind: "p50", x: chartLeft, y: y, w: b.p50 * scale, h: barH})
			if b.aim > 0 {
				lay.items = append(lay.items, chartItem{kind: "aim", x: chartLeft + b.aim*scale - 1, y: y - 2, w: 3, h: barH + 4})
			}
			text := fmt.Sprintf("%.2f %s", b.p50, s.unit)
			if b.p99 > 0 {
				text = fmt.Sprintf("p50 %.2f / p99 %.2f %s", b.p50, b.p99, s.unit)
			}
			if b.aim > 0 {
				text += fmt.Sprintf(" (aim %.2f)", b.aim)
			}
			end := maxf(b.p50, maxf(b.p99, b.aim)) * scale
			lay.items = append(lay.items, chartItem{kind: "value", x: chartLeft + end + 6, y: y + barH - 5, text: strings.TrimSpace(text)})
			y += barH + barGap
		}
		y += sectionGap
	}
	lay.height = int(y)
	return lay
}

var chartColors = map[string]color.RGBA{
	"p50": {0x31, 0x82, 0xbd, 0xff},
	"p99": {0x9e, 0xca, 0xe1, 0xff},
	"aim": {0xd6, 0x27, 0x28, 0xff},
}

func hexColor(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

// WriteSVG draws the figures beside their baselines and aims as an SVG image.
func (r *Result) WriteSVG(w io.Writer) error {
	lay := layoutChart(r.chart())
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", chartWidth, lay.height)
	fmt.Fprintf(&b, `<rect class="bg" width="%d" height="%d" fill="white"/>`+"\n", chartWidth, lay.height)
	for _, it := range lay.items {
		switch it.kind {
		case "title":
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-weight="bold">%s</text>`+"\n", it.x, it.y, html.EscapeString(it.text))
		case "label":
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", it.x, it.y, html.EscapeString(it.text))
		case "value":
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s</text>`+"\n", it.x, it.y, html.EscapeString(it.text))
		default:
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", it.kind, it.x, it.y, it.w, it.h, hexColor(chartColors[it.kind]))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WritePNG draws the same chart as a PNG (for the README), text in a fixed 7x13 font.
func (r *Result) WritePNG(w io.Writer) error {
	lay := layoutChart(r.chart())
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, lay.height))
	fill(img, img.Bounds(), color.RGBA{0xff, 0xff, 0xff, 0xff})
	d := &font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: basicfont.Face7x13}
	for _, it := range lay.items {
		switch it.kind {
		case "title", "value", "label":
			x := it.x
			if it.kind == "label" {
				x -= float64(d.MeasureString(it.text).Round())
			}
			d.Dot = fixed.P(int(x), int(it.y))
			d.DrawString(it.text)
		default:
			fill(img, image.Rect(int(it.x), int(it.y), int(it.x+it.w+0.5), int(it.y+it.h)), chartColors[it.kind])
		}
	}
	return png.Encode(w, img)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}
