package guest

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// The interpreter writes its trace records (lab/trace.Event, one JSON line each) with the
// encoder below, not with lab/trace's Sink: importing lab/trace links encoding/json, whose
// package and pages cost every launch about 2-3 page faults in the TCG guest, traced or not
// (see DESIGN, "Interpreter start under TCG"). The records hold only the value types
// appendValue knows; TestTraceRecordsDecodeAsJSON decodes every record the interpreter makes
// with encoding/json and compares it with json.Marshal's, and FuzzTraceEncoding the strings.

// The steps the interpreter records: lab/trace's names (TestTraceStepNames).
const (
	sideGuest   = "guest"
	stepArgv    = "interpreter argv"
	stepBinfmt  = "binfmt"
	stepConfig  = "config"
	stepFile    = "file"
	stepEnv     = "env"
	stepConnect = "connect"
	stepSend    = "hello+launch"
	stepResult  = "launch result"
	stepRetry   = "retry"
	stepSignal  = "signal"
	stepStream  = "stream"
	stepExit    = "exit"
	stepError   = "error"
)

// traceEvent is lab/trace.Event's fields.
type traceEvent struct {
	Trace, Side, Step string
	Mono              int64
	Wall              time.Time
	PID               int
	Text              string
	Data              map[string]any
}

// traceSink appends events to w, one line and one Write per event (with O_APPEND, lines
// from several processes writing the same file do not interleave), as lab/trace.Sink.
type traceSink struct {
	mu  sync.Mutex
	w   io.Writer
	pid int
	buf []byte
	tee func(traceEvent) // tests: sees each event as recorded
}

func (s *traceSink) recordAt(mono int64, wall time.Time, id, step, text string, data map[string]any) {
	e := traceEvent{Trace: id, Side: sideGuest, Step: step, Mono: mono, Wall: wall, PID: s.pid, Text: text, Data: data}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tee != nil {
		s.tee(e)
	}
	s.buf = append(appendEvent(s.buf[:0], e), '\n')
	s.w.Write(s.buf)
}

// monoNow returns CLOCK_MONOTONIC in nanoseconds (lab/trace.Mono).
func monoNow() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return time.Now().UnixNano()
	}
	return ts.Nano()
}

// appendEvent encodes e as encoding/json encodes a lab/trace.Event.
func appendEvent(b []byte, e traceEvent) []byte {
	b = append(b, `{"trace":`...)
	b = appendString(b, e.Trace)
	b = append(b, `,"side":`...)
	b = appendString(b, e.Side)
	b = append(b, `,"step":`...)
	b = appendString(b, e.Step)
	b = append(b, `,"mono_ns":`...)
	b = strconv.AppendInt(b, e.Mono, 10)
	b = append(b, `,"wall":"`...)
	b = e.Wall.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if e.PID != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(e.PID), 10)
	}
	b = append(b, `,"text":`...)
	b = appendString(b, e.Text)
	if len(e.Data) > 0 {
		b = append(b, `,"data":`...)
		b = appendValue(b, e.Data)
	}
	return append(b, '}')
}

// appendValue encodes the value types the interpreter's records hold. Any other type
// becomes its fmt.Sprint string (none does: the tests check every record).
func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, v)
	case bool:
		return strconv.AppendBool(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case uint8:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10)
	case []string:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']')
	case map[string]any:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '{')
		for i, k := range sortedKeys(v) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, v[k])
		}
		return append(b, '}')
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		if v == nil {
			m = nil
		}
		return appendValue(b, m)
	case []map[string]string:
		return appendList(b, v)
	case []map[string]any:
		return appendList(b, v)
	case []binfmtRule:
		return appendList(b, v)
	case binfmtRule:
		return v.appendJSON(b)
	}
	return appendString(b, fmt.Sprint(v))
}

func appendList[T any](b []byte, v []T) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendValue(b, x)
	}
	return append(b, ']')
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// appendJSON encodes r as encoding/json does with its field tags.
func (r binfmtRule) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, r.Name)
	b = append(b, `,"enabled":`...)
	b = strconv.AppendBool(b, r.Enabled)
	b = append(b, `,"interpreter":`...)
	b = appendString(b, r.Interpreter)
	b = append(b, `,"flags":`...)
	b = appendString(b, r.Flags)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(r.Offset), 10)
	for _, f := range []struct{ k, v string }{{"magic", r.Magic}, {"mask", r.Mask}, {"extension", r.Extension}} {
		if f.v != "" {
			b = append(b, `,"`+f.k+`":`...)
			b = appendString(b, f.v)
		}
	}
	return append(b, '}')
}

// appendString quotes s as a JSON string: invalid UTF-8 becomes U+FFFD and the characters
// JSON or a JavaScript reader cannot take raw are escaped, as encoding/json does.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
