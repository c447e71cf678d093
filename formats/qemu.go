package formats

import "sort"

// qemuArch is an ELF header match for one architecture, as qemu-binfmt-conf.sh registers
// it: e_ident (class, data, version) and e_machine, e_type EXEC or DYN (mask 0xfe).
type qemuArch struct{ magic, mask string }

var elf64Mask = "\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"

func qemuArches() map[string]qemuArch {
	return map[string]qemuArch{
		"aarch64": {"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00", elf64Mask},
		"arm":     {"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00", elf64Mask},
		"riscv64": {"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00", elf64Mask},
		"ppc64le": {"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00", elf64Mask},
		"s390x":   {"\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16", "\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff"},
	}
}

// QEMUELF returns the binfmt match of ELF executables of a qemu-user architecture name
// (qemu-ARCH-static runs them), false for an unknown one.
func QEMUELF(arch string) (magic, mask []byte, ok bool) {
	a, ok := qemuArches()[arch]
	if !ok {
		return nil, nil, false
	}
	return []byte(a.magic), []byte(a.mask), true
}

// QEMUArches lists the architectures QEMUELF knows, sorted.
func QEMUArches() []string {
	var out []string
	for k := range qemuArches() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
