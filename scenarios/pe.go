package scenarios

import (
	"encoding/binary"
	"fmt"
)

// HelloPE returns a minimal Windows x86-64 console program (PE32+) that writes msg to
// its standard output with kernel32's WriteFile and exits with code. The suite's `pe`
// fixture: Go-built Windows programs need bcryptprimitives.dll (ProcessPrng), which the
// Wine of Debian 12 does not have, so the suite writes its own PE, byte by byte, with
// nothing but three kernel32 imports.
func HelloPE(msg string, code uint32) ([]byte, error) {
	const (
		fileAlign = 0x200
		textRVA   = 0x1000
		idataRVA  = 0x2000
		imageBase = 0x140000000
		iltRVA    = idataRVA + 0x40
		iatRVA    = idataRVA + 0x70
		dllRVA    = idataRVA + 0xA0
		writtenVA = idataRVA + 0xE0
		msgRVA    = idataRVA + 0x100
	)
	if len(msg) > 0x100 {
		return nil, fmt.Errorf("scenarios: PE message longer than 256 bytes")
	}
	names := []string{"GetStdHandle", "WriteFile", "ExitProcess"}
	nameRVA := []uint32{idataRVA + 0xB0, idataRVA + 0xC0, idataRVA + 0xD0}

	// .text: RIP-relative code, so the image needs no relocations.
	var code_ []byte
	rel := func(target uint32) { // disp32 from the end of this 4-byte field
		next := textRVA + uint32(len(code_)) + 4
		code_ = binary.LittleEndian.AppendUint32(code_, target-next)
	}
	code_ = append(code_, 0x48, 0x83, 0xEC, 0x38)       // sub rsp, 0x38
	code_ = append(code_, 0xB9, 0xF5, 0xFF, 0xFF, 0xFF) // mov ecx, -11 (STD_OUTPUT_HANDLE)
	code_ = append(code_, 0xFF, 0x15)                   // call [rip+GetStdHandle]
	rel(iatRVA + 0)                                     //
	code_ = append(code_, 0x48, 0x89, 0xC1)             // mov rcx, rax
	code_ = append(code_, 0x48, 0x8D, 0x15)             // lea rdx, [rip+msg]
	rel(msgRVA)                                         //
	code_ = append(code_, 0x41, 0xB8)                   // mov r8d, len(msg)
	code_ = binary.LittleEndian.AppendUint32(code_, uint32(len(msg)))
	code_ = append(code_, 0x4C, 0x8D, 0x0D)                         // lea r9, [rip+written]
	rel(writtenVA)                                                  //
	code_ = append(code_, 0x48, 0xC7, 0x44, 0x24, 0x20, 0, 0, 0, 0) // mov qword [rsp+0x20], 0
	code_ = append(code_, 0xFF, 0x15)                               // call [rip+WriteFile]
	rel(iatRVA + 8)                                                 //
	code_ = append(code_, 0xB9)                                     // mov ecx, code
	code_ = binary.LittleEndian.AppendUint32(code_, code)           //
	code_ = append(code_, 0xFF, 0x15)                               // call [rip+ExitProcess]
	rel(iatRVA + 16)                                                //
	code_ = append(code_, 0xCC)                                     // int3

	// .idata: one import descriptor (kernel32), its lookup and address tables, names.
	idata := make([]byte, fileAlign)
	le := binary.LittleEndian
	le.PutUint32(idata[0x00:], iltRVA)
	le.PutUint32(idata[0x0C:], dllRVA)
	le.PutUint32(idata[0x10:], iatRVA)
	for i, r := range nameRVA {
		le.PutUint64(idata[iltRVA-idataRVA+8*i:], uint64(r))
		le.PutUint64(idata[iatRVA-idataRVA+8*i:], uint64(r))
		copy(idata[r-idataRVA+2:], names[i]) // 2-byte hint 0, then the NUL-terminated name
	}
	copy(idata[dllRVA-idataRVA:], "KERNEL32.dll")
	copy(idata[msgRVA-idataRVA:], msg)

	img := make([]byte, 3*fileAlign)
	copy(img, "MZ")
	le.PutUint32(img[0x3C:], 0x40)
	copy(img[0x40:], "PE\x00\x00")
	coff := img[0x44:]
	le.PutUint16(coff[0:], 0x8664)  // AMD64
	le.PutUint16(coff[2:], 2)       // sections
	le.PutUint16(coff[16:], 0xF0)   // optional header size
	le.PutUint16(coff[18:], 0x0023) // relocs stripped, executable, large address aware
	opt := img[0x58:]
	le.PutUint16(opt[0:], 0x20B) // PE32+
	le.PutUint32(opt[4:], fileAlign)
	le.PutUint32(opt[8:], fileAlign)
	le.PutUint32(opt[16:], textRVA) // entry point
	le.PutUint32(opt[20:], textRVA) // base of code
	le.PutUint64(opt[24:], imageBase)
	le.PutUint32(opt[32:], 0x1000) // section alignment
	le.PutUint32(opt[36:], fileAlign)
	le.PutUint16(opt[40:], 6)         // OS version 6.0
	le.PutUint16(opt[48:], 6)         // subsystem version 6.0
	le.PutUint32(opt[56:], 0x3000)    // size of image
	le.PutUint32(opt[60:], fileAlign) // size of headers
	le.PutUint16(opt[68:], 3)         // console subsystem
	le.PutUint16(opt[70:], 0x0100)    // NX compatible
	le.PutUint64(opt[72:], 0x100000)  // stack reserve
	le.PutUint64(opt[80:], 0x1000)    // stack commit
	le.PutUint64(opt[88:], 0x100000)  // heap reserve
	le.PutUint64(opt[96:], 0x1000)    // heap commit
	le.PutUint32(opt[108:], 16)       // data directories
	dirs := opt[112:]
	le.PutUint32(dirs[1*8:], idataRVA) // import table
	le.PutUint32(dirs[1*8+4:], 40)
	le.PutUint32(dirs[12*8:], iatRVA) // import address table
	le.PutUint32(dirs[12*8+4:], 32)
	sec := img[0x148:]
	section := func(s []byte, name string, rva, raw, flags uint32) {
		copy(s, name)
		le.PutUint32(s[8:], fileAlign) // virtual size
		le.PutUint32(s[12:], rva)
		le.PutUint32(s[16:], fileAlign) // raw size
		le.PutUint32(s[20:], raw)
		le.PutUint32(s[36:], flags)
	}
	section(sec[0:], ".text", textRVA, fileAlign, 0x60000020)      // code, execute, read
	section(sec[40:], ".idata", idataRVA, 2*fileAlign, 0xC0000040) // data, read, write
	copy(img[fileAlign:], code_)
	copy(img[2*fileAlign:], idata)
	return img, nil
}
