//go:build windows

package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func signalOf(string) syscall.Signal { return syscall.SIGTERM }

func notifyAll(ch chan os.Signal) { signal.Notify(ch, os.Interrupt, syscall.SIGTERM) }

func sigName(s os.Signal) string {
	if s == os.Interrupt {
		return "SIGINT"
	}
	return s.String()
}

func sigNum(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}

func ttyReport() int {
	fmt.Println("tty=unknown")
	return 0
}
