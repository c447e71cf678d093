// Package progress is lab's one progress UI, for the image build and the VM boot: bars
// (github.com/schollz/progressbar/v3) when the output is a terminal, plain lines otherwise
// (a log, CI, a pipe), nothing when the writer is nil.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress reports steps to one writer. A nil *Progress, or one made with a nil writer,
// is silent.
type Progress struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
}

// New reports to w: bars when w is a terminal, lines otherwise; nil w: nothing.
func New(w io.Writer) *Progress {
	p := &Progress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// Line prints one line (a newline is added).
func (p *Progress) Line(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Bar is one step in progress: a bar or spinner on a terminal, its start line otherwise.
type Bar struct {
	p     *Progress
	desc  string
	pb    *progressbar.ProgressBar
	start time.Time
	once  sync.Once
}

// Bar starts a step of total units; unit "bytes" shows sizes. Without a terminal it
// prints "desc...".
func (p *Progress) Bar(desc string, total int64, unit string) *Bar {
	opts := []progressbar.Option{progressbar.OptionSetPredictTime(false)}
	if unit == "bytes" {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount())
	}
	return p.start(desc, total, opts)
}

// Wait starts a step of unknown length (the VM boot): a spinner with the time taken on a
// terminal, "desc..." otherwise.
func (p *Progress) Wait(desc string) *Bar {
	return p.start(desc, -1, []progressbar.Option{
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetRenderBlankState(true),
	})
}

func (p *Progress) start(desc string, total int64, opts []progressbar.Option) *Bar {
	b := &Bar{p: p, desc: desc, start: time.Now()}
	if p == nil || p.w == nil {
		return b
	}
	if !p.tty {
		p.Line("%s...", desc)
		return b
	}
	opts = append(opts,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	b.pb = progressbar.NewOptions64(total, opts...)
	return b
}

// Add advances the bar by n units.
func (b *Bar) Add(n int64) {
	if b.pb != nil {
		b.pb.Add64(n)
	}
}

// Set puts the bar at n units.
func (b *Bar) Set(n int64) {
	if b.pb != nil {
		b.pb.Set64(n)
	}
}

// Finish ends the step with "desc: done in N.Ns".
func (b *Bar) Finish() {
	b.Done("%s: done in %.1fs", b.desc, time.Since(b.start).Seconds())
}

// Done ends the step with a line of its own.
func (b *Bar) Done(format string, args ...any) {
	b.once.Do(func() {
		b.clear()
		b.p.Line(format, args...)
	})
}

// Stop ends the step without a line (it failed; the caller says why).
func (b *Bar) Stop() { b.once.Do(b.clear) }

func (b *Bar) clear() {
	if b.pb != nil {
		b.pb.Finish()
		b.pb.Exit()
	}
}
