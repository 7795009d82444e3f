package netlab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Find returns, per host name, the live processes (not zombies) whose
// command line contains marker and that run in that host's namespace.
// Processes outside the lab are left out.
func (l *Lab) Find(marker string) (map[string][]int, error) {
	inode := map[string]string{} // "net:[123]" -> host name
	for _, h := range l.Hosts {
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+h.NS, &st); err != nil {
			return nil, fmt.Errorf("find %q: namespace of %s: %w", marker, h.Name, err)
		}
		inode[fmt.Sprintf("net:[%d]", st.Ino)] = h.Name
	}
	found := map[string][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("find %q: %w", marker, err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !strings.Contains(string(b), marker) {
			continue
		}
		ns, err := os.Readlink(filepath.Join(dir, "ns", "net"))
		if err != nil {
			continue
		}
		host, ok := inode[ns]
		if !ok {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(dir, "stat")); err != nil || zombie(st) {
			continue
		}
		found[host] = append(found[host], pid)
	}
	return found, nil
}

// zombie reports whether a /proc/PID/stat line is a zombie's (state Z) or
// a dead one's (X).
func zombie(stat []byte) bool {
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}
