// runc-caps is an OCI runtime wrapper for Docker hosts whose dockerd lacks a
// capability in its bounding set (these CI sandboxes drop CAP_SYS_RESOURCE).
// There, `docker run --privileged` and `docker exec --privileged` (which kind
// uses for every node command) fail with "unable to apply caps": Docker asks
// runc for every capability it knows. This wrapper removes the capabilities
// the process cannot hold from the OCI spec (config.json for create/run, the
// --process file for exec) and then runs the real runc with the same args.
//
// up.sh registers it as the Docker runtime "devloop-runc" only when needed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
	"NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT",
	"SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
	"PERFMON", "BPF", "CHECKPOINT_RESTORE"}

// unavailable returns the CAP_* names missing from this process's bounding set.
func unavailable() map[string]bool {
	missing := map[string]bool{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return missing
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			bnd, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return missing
			}
			for i, n := range capNames {
				if bnd&(1<<uint(i)) == 0 {
					missing["CAP_"+n] = true
				}
			}
		}
	}
	return missing
}

// filterCaps edits the "capabilities" object found at path (a list of keys
// leading to it) in the JSON file, dropping unavailable capabilities.
func filterCaps(file string, path []string, missing map[string]bool) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	obj := doc
	for _, k := range path {
		next, ok := obj[k].(map[string]any)
		if !ok {
			return nil
		}
		obj = next
	}
	caps, ok := obj["capabilities"].(map[string]any)
	if !ok {
		return nil
	}
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := []any{}
		for _, c := range list {
			if s, _ := c.(string); !missing[s] {
				kept = append(kept, c)
			}
		}
		caps[set] = kept
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(file, out, 0o600)
}

func argValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v
			}
		}
	}
	return ""
}

// installRuntime adds {"runtimes": {name: {"path": self}}} to Docker's
// daemon.json, keeping everything else. Usage: devloop-runc --install FILE NAME
func installRuntime(file, name string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	doc := map[string]any{}
	if data, err := os.ReadFile(file); err == nil && len(strings.TrimSpace(string(data))) > 0 {
		if err := json.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	} else if err != nil && !os.IsNotExist(err) {
		return err
	}
	runtimes, _ := doc["runtimes"].(map[string]any)
	if runtimes == nil {
		runtimes = map[string]any{}
	}
	runtimes[name] = map[string]any{"path": self}
	doc["runtimes"] = runtimes
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, append(out, '\n'), 0o644)
}

func main() {
	args := os.Args[1:]
	if len(args) == 3 && args[0] == "--install" {
		if err := installRuntime(args[1], args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "runc-caps:", err)
			os.Exit(1)
		}
		return
	}
	if missing := unavailable(); len(missing) > 0 {
		cmd := ""
		for _, a := range args {
			if a == "create" || a == "run" || a == "exec" {
				cmd = a
				break
			}
		}
		var err error
		switch cmd {
		case "create", "run":
			bundle := argValue(args, "--bundle", "-b")
			if bundle == "" {
				bundle = "."
			}
			err = filterCaps(filepath.Join(bundle, "config.json"), []string{"process"}, missing)
		case "exec":
			if p := argValue(args, "--process", "-p"); p != "" {
				err = filterCaps(p, nil, missing)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "runc-caps:", err)
			os.Exit(1)
		}
	}
	runc := os.Getenv("DEVLOOP_REAL_RUNC")
	if runc == "" {
		var err error
		if runc, err = exec.LookPath("runc"); err != nil {
			runc = "/usr/sbin/runc"
		}
	}
	if err := syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "runc-caps: exec", runc+":", err)
		os.Exit(1)
	}
}
