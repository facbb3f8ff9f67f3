package runtime

import (
	"fmt"
	"strings"
)

// linuxGuest is a Linux kernel booting a single application. The command
// line follows urunc's, so that images built for urunc (and their inits,
// urunit among them) see what they expect.
type linuxGuest struct{}

func (linuxGuest) Cmdline(req BootRequest) (string, error) {
	if len(req.Args) == 0 {
		return "", fmt.Errorf("linux guest: no init to run: the container has no args and no %scmdline", AnnotationPrefix)
	}
	parts := []string{"panic=-1", "console=ttyS0"}
	initParam := "init="
	if req.HasInitrd {
		parts = append(parts, "root=/dev/ram0", "rw")
		initParam = "rdinit="
	} else {
		parts = append(parts, "root=/dev/vda", "rw")
	}
	if n := req.Net; n != nil {
		parts = append(parts, fmt.Sprintf("ip=%s::%s:%s:urunc:eth0:off", n.Address, n.Gateway, n.Mask))
	}
	// The kernel splits its command line on spaces; urunc's convention is
	// to single-quote an argument that has them, and its init rejoins it.
	args := make([]string, len(req.Args))
	for i, a := range req.Args {
		a = strings.TrimSpace(a)
		if strings.ContainsAny(a, " \t") {
			a = "'" + a + "'"
		}
		args[i] = a
	}
	parts = append(parts, initParam+args[0], "--")
	parts = append(parts, args[1:]...)
	return strings.Join(parts, " "), nil
}
