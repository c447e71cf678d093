//go:build windows

// Command paste prints the Windows clipboard's text (CF_UNICODETEXT) as UTF-8, as
// PowerShell's Get-Clipboard -Raw does: lab's way to read back what clip.exe put there. It
// exits 1 with a message when the clipboard holds no text.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unicode/utf16"
	"unsafe"
)

var (
	user32   = syscall.NewLazyDLL("user32.dll")
	kernel32 = syscall.NewLazyDLL("kernel32.dll")

	openClipboard    = user32.NewProc("OpenClipboard")
	getClipboardData = user32.NewProc("GetClipboardData")
	closeClipboard   = user32.NewProc("CloseClipboard")
	globalLock       = kernel32.NewProc("GlobalLock")
	globalUnlock     = kernel32.NewProc("GlobalUnlock")
)

const cfUnicodeText = 13

func main() {
	var ok uintptr
	var err error
	for i := 0; i < 20; i++ {
		if ok, _, err = openClipboard.Call(0); ok != 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ok == 0 {
		fail("cannot open the Windows clipboard: %v", err)
	}
	h, _, _ := getClipboardData.Call(cfUnicodeText)
	if h == 0 {
		closeClipboard.Call()
		fail("the Windows clipboard holds no text")
	}
	p, _, err := globalLock.Call(h)
	if p == 0 {
		closeClipboard.Call()
		fail("GlobalLock: %v", err)
	}
	var text []uint16
	// p is global memory from GlobalLock, not Go memory (see clip).
	for ptr := (*uint16)(*(*unsafe.Pointer)(unsafe.Pointer(&p))); *ptr != 0; ptr = (*uint16)(unsafe.Add(unsafe.Pointer(ptr), 2)) {
		text = append(text, *ptr)
	}
	globalUnlock.Call(h)
	closeClipboard.Call()
	os.Stdout.WriteString(string(utf16.Decode(text)))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "paste.exe: "+format+"\n", args...)
	os.Exit(1)
}
