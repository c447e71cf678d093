//go:build windows

// Command clip is lab's clip.exe (Wine ships none): it puts its standard input on the Windows
// clipboard as CF_UNICODETEXT, decoding it as Windows' clip.exe does: UTF-16LE after a FF FE
// byte order mark, UTF-8 after EF BB BF, otherwise the console's input code page (the OEM code
// page when there is no console), so UTF-8 without a BOM is mangled exactly as on Windows
// unless the code page is 65001.
package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
	"unicode/utf16"
	"unsafe"
)

var (
	user32   = syscall.NewLazyDLL("user32.dll")
	kernel32 = syscall.NewLazyDLL("kernel32.dll")

	openClipboard       = user32.NewProc("OpenClipboard")
	emptyClipboard      = user32.NewProc("EmptyClipboard")
	setClipboardData    = user32.NewProc("SetClipboardData")
	closeClipboard      = user32.NewProc("CloseClipboard")
	globalAlloc         = kernel32.NewProc("GlobalAlloc")
	globalLock          = kernel32.NewProc("GlobalLock")
	globalUnlock        = kernel32.NewProc("GlobalUnlock")
	globalFree          = kernel32.NewProc("GlobalFree")
	getConsoleCP        = kernel32.NewProc("GetConsoleCP")
	getOEMCP            = kernel32.NewProc("GetOEMCP")
	multiByteToWideChar = kernel32.NewProc("MultiByteToWideChar")
)

const (
	cfUnicodeText = 13
	gmemMoveable  = 0x0002
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "/?" || os.Args[1] == "-?") {
		fmt.Println("CLIP: redirects the output of command line tools to the Windows clipboard (lab's clip.exe).\n\n    DIR | CLIP\n    CLIP < README.TXT")
		return
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("cannot read standard input: %v", err)
	}
	text, err := decode(in)
	if err != nil {
		fail("%v", err)
	}
	if err := put(text); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "clip.exe: "+format+"\n", args...)
	os.Exit(1)
}

// decode turns clip's input into UTF-16 (without a terminating NUL).
func decode(in []byte) ([]uint16, error) {
	switch {
	case len(in) >= 2 && in[0] == 0xFF && in[1] == 0xFE:
		b := in[2:]
		out := make([]uint16, len(b)/2)
		for i := range out {
			out[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
		}
		return out, nil
	case len(in) >= 3 && in[0] == 0xEF && in[1] == 0xBB && in[2] == 0xBF:
		return utf16.Encode([]rune(string(in[3:]))), nil
	}
	if len(in) == 0 {
		return nil, nil
	}
	cp, _, _ := getConsoleCP.Call()
	if cp == 0 { // no console (stdin and stdout redirected, no console window)
		cp, _, _ = getOEMCP.Call()
	}
	if cp == 65001 {
		return utf16.Encode([]rune(string(in))), nil
	}
	n, _, err := multiByteToWideChar.Call(cp, 0, uintptr(unsafe.Pointer(&in[0])), uintptr(len(in)), 0, 0)
	if n == 0 {
		return nil, fmt.Errorf("cannot decode the input in code page %d: %v", cp, err)
	}
	out := make([]uint16, n)
	multiByteToWideChar.Call(cp, 0, uintptr(unsafe.Pointer(&in[0])), uintptr(len(in)), uintptr(unsafe.Pointer(&out[0])), n)
	return out, nil
}

// put replaces the clipboard's contents with text.
func put(text []uint16) error {
	var ok uintptr
	var err error
	// Another program may hold the clipboard for a moment.
	for i := 0; i < 20; i++ {
		if ok, _, err = openClipboard.Call(0); ok != 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ok == 0 {
		return fmt.Errorf("cannot open the Windows clipboard: %v", err)
	}
	defer closeClipboard.Call()
	if r, _, err := emptyClipboard.Call(); r == 0 {
		return fmt.Errorf("cannot empty the Windows clipboard: %v", err)
	}
	size := (len(text) + 1) * 2
	h, _, err := globalAlloc.Call(gmemMoveable, uintptr(size))
	if h == 0 {
		return fmt.Errorf("GlobalAlloc(%d): %v", size, err)
	}
	p, _, err := globalLock.Call(h)
	if p == 0 {
		globalFree.Call(h)
		return fmt.Errorf("GlobalLock: %v", err)
	}
	// p is global memory from GlobalLock, not Go memory: converted through a pointer so that
	// vet's uintptr rule (about Go memory) does not apply.
	dst := unsafe.Slice((*uint16)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), len(text)+1)
	copy(dst, text)
	dst[len(text)] = 0
	globalUnlock.Call(h)
	if r, _, err := setClipboardData.Call(cfUnicodeText, h); r == 0 {
		globalFree.Call(h)
		return fmt.Errorf("cannot put the text on the Windows clipboard: %v", err)
	}
	return nil
}
