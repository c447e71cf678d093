package images

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports build steps to Options.Progress: a progress bar when it
// is a terminal, plain lines otherwise, nothing when it is nil.
type progress struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) line(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

type bar struct {
	p     *progress
	desc  string
	pb    *progressbar.ProgressBar
	start time.Time
	once  sync.Once
}

// bar starts a step of total units; unit "bytes" shows sizes.
func (p *progress) bar(desc string, total int64, unit string) *bar {
	b := &bar{p: p, desc: desc, start: time.Now()}
	if p == nil || p.w == nil {
		return b
	}
	if !p.tty {
		p.line("%s...", desc)
		return b
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(false),
	}
	if unit == "bytes" {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount())
	}
	b.pb = progressbar.NewOptions64(total, opts...)
	return b
}

func (b *bar) add(n int64) {
	if b.pb != nil {
		b.pb.Add64(n)
	}
}

func (b *bar) set(n int64) {
	if b.pb != nil {
		b.pb.Set64(n)
	}
}

// finish ends the step with a line saying how long it took.
func (b *bar) finish() {
	b.once.Do(func() {
		if b.pb != nil {
			b.pb.Finish()
		}
		b.p.line("%s: done in %.1fs", b.desc, time.Since(b.start).Seconds())
	})
}
