package wire

import (
	"bytes"
	"context"
	"io"
	"net"
	"reflect"
	"testing"
	"time"
)

// fuzzMessage checks that a decoder never panics and that whatever it
// accepts re-encodes to the same bytes (the encoding is canonical).
func fuzzMessage(f *testing.F, t Type) {
	for _, g := range goldenMessages {
		if g.msg.Type() == t {
			f.Add(unhex(f, g.frame)[HeaderSize:])
		}
	}
	f.Fuzz(func(tt *testing.T, p []byte) {
		m, err := Unmarshal(t, p)
		if err != nil {
			return
		}
		q, err := m.MarshalBinary()
		if err != nil {
			tt.Fatalf("decoded %#v but cannot encode it: %v", m, err)
		}
		if !bytes.Equal(p, q) {
			tt.Fatalf("re-encoding differs:\n in %x\nout %x", p, q)
		}
		m2, err := Unmarshal(t, q)
		if err != nil || !reflect.DeepEqual(m, m2) {
			tt.Fatalf("second decode: %#v, %v", m2, err)
		}
	})
}

func FuzzHello(f *testing.F)        { fuzzMessage(f, TypeHello) }
func FuzzLaunch(f *testing.F)       { fuzzMessage(f, TypeLaunch) }
func FuzzLaunchResult(f *testing.F) { fuzzMessage(f, TypeLaunchResult) }
func FuzzResize(f *testing.F)       { fuzzMessage(f, TypeResize) }
func FuzzSignal(f *testing.F)       { fuzzMessage(f, TypeSignal) }
func FuzzExit(f *testing.F)         { fuzzMessage(f, TypeExit) }
func FuzzSessionError(f *testing.F) { fuzzMessage(f, TypeError) }

// FuzzReadFrame: the frame reader on arbitrary input.
func FuzzReadFrame(f *testing.F) {
	for _, g := range goldenMessages {
		f.Add(unhex(f, g.frame))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	buf := make([]byte, MaxPayload)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			_, p, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			if len(p) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(p))
			}
		}
	})
}

// FuzzSession feeds arbitrary bytes to both roles' frame handling: no
// panic, no hang, and the session ends when the input does.
func FuzzSession(f *testing.F) {
	for _, g := range goldenMessages {
		f.Add(unhex(f, g.frame), true)
	}
	f.Add(unhex(f, "00000006 10 01 616263 00000002 11 01 00000006 12 00 00000100 00000002 13 00"), true)
	f.Add(unhex(f, "00000006 10 00 616263 00000002 11 00 00000006 12 01 00000100 00000002 13 02"), false)
	f.Fuzz(func(t *testing.T, in []byte, guest bool) {
		role := RoleHost
		if guest {
			role = RoleGuest
		}
		a, b := net.Pipe()
		s := NewSession(a, role)
		go func() {
			b.Write(in)
			b.Close()
		}()
		go io.Copy(io.Discard, b) // window updates and close-reads
		for id := StreamID(0); id < numStreams; id++ {
			if s.readers[id] != nil {
				go io.Copy(io.Discard, s.readers[id])
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			if _, err := s.Recv(ctx); err != nil {
				if err == context.DeadlineExceeded {
					t.Fatal("session did not end with its input")
				}
				break
			}
		}
		s.Close()
	})
}

func FuzzParseStub(f *testing.F) {
	f.Add([]byte("#!lab-host\nnotify-send\n"))
	f.Add([]byte("#!lab-host\nx\n# c\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		name, err := ParseStub(in)
		if err != nil {
			return
		}
		b, err := FormatStub(name)
		if err != nil {
			t.Fatalf("parsed %q but cannot format it: %v", name, err)
		}
		if n2, err := ParseStub(b); err != nil || n2 != name {
			t.Fatalf("round trip %q -> %q, %v", name, n2, err)
		}
	})
}
