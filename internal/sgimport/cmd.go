package sgimport

import (
	"fmt"
	"strings"
)

// shellChars are the characters that make Serviceguard's shell (which runs
// every service_cmd) do more than split words.
const shellChars = "$`|&;<>()*?[]~'\"\\{}!#=\n"

// splitCmd turns a service_cmd into an argv: plain words are split on
// white space; a command that needs the shell runs through /bin/sh -c, as
// Serviceguard runs it.
// cmd must not be blank.
func splitCmd(cmd string) []string {
	cmd = strings.TrimSpace(cmd)
	// A command that is already "sh -c '...'" keeps its script as it is.
	for _, sh := range []string{"/bin/sh", "/usr/bin/sh", "sh", "/bin/bash", "/usr/bin/bash", "/bin/ksh", "/usr/bin/ksh"} {
		rest, ok := strings.CutPrefix(cmd, sh+" -c '")
		if ok && strings.HasSuffix(rest, "'") && !strings.Contains(rest[:len(rest)-1], "'") {
			return []string{sh, "-c", rest[:len(rest)-1]}
		}
	}
	if strings.ContainsAny(cmd, shellChars) {
		return []string{"/bin/sh", "-c", cmd}
	}
	return strings.Fields(cmd)
}

// unwrapCmappmgr reads a cmappmgr service command (cmappmgr -node GUEST
// [-cmappserver_timeout N] -service PATH [ARGS...]) and returns the command
// to run inside the guest and the guest's name: in vmguard the host manager
// asks the guest agent directly, so the cmappmgr wrapper goes.
func unwrapCmappmgr(argv []string) (app []string, guest string, err error) {
	for i := 1; i < len(argv); i++ {
		switch argv[i] {
		case "-node":
			if i+1 == len(argv) {
				return nil, "", fmt.Errorf("cmappmgr -node without a guest name")
			}
			i++
			guest = strings.ReplaceAll(argv[i], ".", "-")
		case "-cmappserver_timeout":
			i++ // vmguard's guest_timeout covers a silent agent
		case "-service", "-service_path":
			if i+1 == len(argv) {
				return nil, "", fmt.Errorf("cmappmgr %s without a command", argv[i])
			}
			return argv[i+1:], guest, nil
		default:
			return nil, "", fmt.Errorf("cmappmgr option %q is not known to vmguard import", clip(argv[i]))
		}
	}
	return nil, "", fmt.Errorf("cmappmgr without -service: nothing to run in the guest")
}
