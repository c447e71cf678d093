//go:build !windows

package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

func signalOf(name string) syscall.Signal {
	switch name {
	case "INT":
		return syscall.SIGINT
	case "HUP":
		return syscall.SIGHUP
	case "QUIT":
		return syscall.SIGQUIT
	case "KILL":
		return syscall.SIGKILL
	default:
		return syscall.SIGTERM
	}
}

func notifyAll(ch chan os.Signal) {
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
}

func sigName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	}
	return s.String()
}

func sigNum(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}

type winsize struct{ Row, Col, X, Y uint16 }

func ttyReport() int {
	var ws winsize
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, os.Stdin.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	if errno != 0 {
		fmt.Println("tty=no")
		return 0
	}
	fmt.Printf("tty=yes rows=%d cols=%d\n", ws.Row, ws.Col)
	return 0
}
