package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killStrays kills every process whose command line mentions dir: the guest
// agents (and their processes) that host managers started under a
// temporary directory, which outlive their host manager by design, as a VM
// outlives a crashed host manager. Benchmarks and tests call it when done.
func killStrays(dir string) {
	eachProc(func(pid int) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// eachProc calls fn with the pid of every process in /proc but this one.
func eachProc(fn func(pid int)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			fn(pid)
		}
	}
}
