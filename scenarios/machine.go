package scenarios

import (
	"fmt"
	"strings"
)

// Machine says what a run ran on (lab run's report names it): the VM, its guest
// architecture and image, kernel and accelerator.
type Machine struct {
	Name   string `json:"name,omitempty"`
	Arch   string `json:"arch"`             // guest architecture: amd64, arm64
	Distro string `json:"distro,omitempty"` // the image's distro: initramfs, debian (zero in reports before it)
	Image  string `json:"image,omitempty"`  // the image's cache key
	Kernel string `json:"kernel,omitempty"`
	Accel  string `json:"accel,omitempty"` // kvm or tcg
}

// String is the one-line form the reports print:
// "default: arm64, initramfs image KEY, kernel V, tcg".
func (m *Machine) String() string {
	var parts []string
	image := "image "
	if m.Distro != "" {
		image = m.Distro + " image "
	}
	for _, p := range []struct{ label, v string }{{"", m.Arch}, {image, m.Image}, {"kernel ", m.Kernel}, {"", m.Accel}} {
		if p.v != "" {
			parts = append(parts, p.label+p.v)
		}
	}
	s := strings.Join(parts, ", ")
	if m.Name != "" {
		s = fmt.Sprintf("%s: %s", m.Name, s)
	}
	return s
}

// mergeMachines is the machine of merged shards: theirs when all ran on the same
// architecture and image (the VM's name only when it too is the same), else nil.
func mergeMachines(reps []*Report) *Machine {
	if len(reps) == 0 || reps[0].Machine == nil {
		return nil
	}
	m := *reps[0].Machine
	for _, r := range reps[1:] {
		o := r.Machine
		if o == nil || o.Arch != m.Arch || o.Distro != m.Distro || o.Image != m.Image || o.Kernel != m.Kernel {
			return nil
		}
		if o.Name != m.Name {
			m.Name = ""
		}
		if o.Accel != m.Accel {
			m.Accel = ""
		}
	}
	return &m
}
