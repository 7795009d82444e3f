package guestagent

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// markerEnv is set in every process the agent starts to the id of its
// process.started event. Descendants inherit it, which lets a restarted
// agent tell the leftovers of its predecessor's processes from anything else.
const markerEnv = "VMGUARD_PROCESS_ID"

// leftover is a process the previous agent started and never saw exit.
type leftover struct {
	pid    int
	marker string // started event id
	stamp  procStamp
}

// reclaimLeftovers kills, with SIGKILL, what is still alive of processes a
// previous agent started: the process itself if its pid still names the same
// incarnation (same boot, same start time), and any member of its process
// group that carries its marker. It returns how many processes it signalled.
// After a reboot nothing can be left, so it does nothing.
func reclaimLeftovers(list []leftover, bootID string) int {
	groups := make(map[int]leftover)
	killed := 0
	for _, l := range list {
		if l.stamp.BootID == "" || l.stamp.BootID != bootID || l.pid <= 1 {
			continue
		}
		groups[l.pid] = l
		if st, err := readProcStat(l.pid); err == nil && st.startTicks == l.stamp.StartTicks {
			// The leader still exists, so its group id is still ours.
			_ = syscall.Kill(-l.pid, syscall.SIGKILL)
			_ = syscall.Kill(l.pid, syscall.SIGKILL)
			killed++
		}
	}
	if len(groups) == 0 {
		return killed
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return killed
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue
		}
		l, ok := groups[st.pgrp]
		if !ok || !hasEnv(pid, markerEnv+"="+l.marker) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		killed++
	}
	return killed
}

// hasEnv reports whether the initial environment of pid holds entry.
func hasEnv(pid int, entry string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if string(kv) == entry {
			return true
		}
	}
	return false
}
