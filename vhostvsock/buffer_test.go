package vhostvsock

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestByteRing(t *testing.T) {
	b := byteRing{size: 100 << 10}
	var model []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		if rng.IntN(2) == 0 {
			p := make([]byte, rng.IntN(40<<10))
			for j := range p {
				p[j] = byte(i + j)
			}
			n := b.write(p)
			if want := min(len(p), 100<<10-len(model)); n != want {
				t.Fatalf("write %d = %d, want %d", len(p), n, want)
			}
			model = append(model, p[:n]...)
		} else {
			p := make([]byte, rng.IntN(50<<10))
			n := b.read(p)
			if n != min(len(p), len(model)) || !bytes.Equal(p[:n], model[:n]) {
				t.Fatalf("read mismatch at step %d", i)
			}
			model = model[n:]
		}
		if b.n != len(model) || len(b.buf) > b.size {
			t.Fatalf("n=%d model=%d cap=%d", b.n, len(model), len(b.buf))
		}
	}
}
