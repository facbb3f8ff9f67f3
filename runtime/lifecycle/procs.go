package lifecycle

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procStat returns the parent pid and start time (field 22, in clock ticks
// since boot) of pid from /proc/PID/stat.
func procStat(pid int) (ppid int, start uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; fields
	// after it start after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field N is f[N-3].
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return ppid, start, err
}

// ProcessStartTime returns the start time of pid, for pid reuse checks.
func ProcessStartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// SameProcess tells whether pid is still the live process that had
// startTime: a pid the kernel has handed to another process must never be
// signalled, and a zombie is already dead. An unknown start time (0)
// proves nothing and matches no process.
func SameProcess(pid int, startTime uint64) bool {
	if pid <= 0 || startTime == 0 {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == 'Z' {
		return false
	}
	st, err := ProcessStartTime(pid)
	return err == nil && st == startTime
}

// Descendants returns pid and every live process below it.
func Descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, _, err := procStat(p)
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// StartedAt converts a start time from /proc/PID/stat (clock ticks since
// boot) to wall-clock time.
func StartedAt(ticks uint64) time.Time {
	var info unix.Sysinfo_t
	if unix.Sysinfo(&info) != nil {
		return time.Time{}
	}
	// USER_HZ is 100 on every Linux architecture this runs on.
	const userHZ = 100
	boot := time.Now().Add(-time.Duration(info.Uptime) * time.Second)
	return boot.Add(time.Duration(ticks) * time.Second / userHZ).Truncate(time.Second)
}
