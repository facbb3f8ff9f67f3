// Command standin-monitor stands in for qemu where a test needs many
// containers fast or a chosen exit code: the host config points
// [monitors.qemu].path at it. It also plays firecracker,
// cloud-hypervisor and solo5's tenders, for the test of their launch (see
// monitors.go). It reads what to do from the guest's arguments on the
// command line it is given (qemu's -append, firecracker's boot_args,
// cloud-hypervisor's --cmdline: "... -- CMD ARGS"; a solo5 guest's
// arguments after its options):
//
//	exit N   print a line, wait a second, exit with status N
//	sleep    print a ready line and block until killed
//	oom      touch memory until the container's memory cgroup OOM-kills it
//	symlink-api PATH  (firecracker) leave a symlink to PATH where its API
//	         socket goes, print a line on SIGTERM, block until killed
//	(with a vsock device, firecracker's or cloud-hypervisor's) play the
//	         guest agent behind it, reporting status 7, see vsock.go
//	keyctl   try a call the project's seccomp filter denies, print the
//	         outcome, then block like sleep
//	(other)  print the arguments and exit 0
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	guestArgs, err := playMonitor(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin-monitor:", err)
		os.Exit(2)
	}
	if agentServed {
		// The guest agent's guest: it ends once the shim has its status.
		if !waitAgentDone(30 * time.Second) {
			fmt.Println("STANDIN_AGENT_UNUSED")
			os.Exit(3)
		}
		fmt.Println("STANDIN_AGENT_DONE")
		os.Exit(0)
	}
	if len(guestArgs) == 0 {
		guestArgs = []string{"echo"}
	}
	switch guestArgs[0] {
	case "exit":
		code := 0
		if len(guestArgs) > 1 {
			code, _ = strconv.Atoi(guestArgs[1])
		}
		fmt.Println("STANDIN_EXITING", code)
		time.Sleep(time.Second)
		os.Exit(code)
	case "oom":
		fmt.Println("STANDIN_GROWING")
		var hoard [][]byte
		for {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = 1
			}
			hoard = append(hoard, b)
			runtime.KeepAlive(hoard)
			time.Sleep(10 * time.Millisecond)
		}
	case "keyctl":
		_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_PROCESS_KEYRING, true)
		fmt.Println("STANDIN_KEYCTL:", errText(err))
		fmt.Println("STANDIN_READY")
		for {
			time.Sleep(time.Hour)
		}
	case "symlink-api":
		// Its API socket is a symlink out of its root (firecracker):
		// report the signal the shim passes on when its power-down
		// finds no socket.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, unix.SIGTERM)
		fmt.Println("STANDIN_READY")
		<-sigs
		fmt.Println("STANDIN_SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "sleep":
		fmt.Println("STANDIN_READY")
		// Only SIGKILL ends it, as for a real monitor that is PID 1.
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Println("STANDIN_ARGS:", strings.Join(guestArgs[1:], " "))
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
