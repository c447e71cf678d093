//go:build windows

// Command labdesktop keeps a headless Wine prefix's desktop, and with it the clipboard,
// alive. Wine's desktop process (explorer.exe /desktop) exits about a second after the last
// process using the desktop has gone, and the clipboard goes with it: without this, text that
// clip.exe put there was gone by the time paste.exe ran (measured: a new explorer.exe /desktop
// for every clip.exe). lab's wineprefix starts it when it configures a prefix; a second copy
// exits at once (named mutex), and wineserver -k ends it with the prefix.
package main

import (
	"syscall"
	"time"
	"unsafe"
)

func main() {
	kernel32 := syscall.NewLazyDLL("kernel32.dll")
	user32 := syscall.NewLazyDLL("user32.dll")
	name, _ := syscall.UTF16PtrFromString(`Local\lab-desktop-keeper`)
	h, _, err := kernel32.NewProc("CreateMutexW").Call(0, 1, uintptr(unsafe.Pointer(name)))
	if h == 0 || err == syscall.ERROR_ALREADY_EXISTS {
		return
	}
	// Using the desktop makes this process one of its users (and starts it if needed).
	user32.NewProc("GetDesktopWindow").Call()
	for {
		time.Sleep(time.Hour)
	}
}
