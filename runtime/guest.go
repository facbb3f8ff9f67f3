package runtime

import (
	"fmt"
	"sort"
	"strings"
)

// GuestNet is the network a guest takes over from the container's
// interface.
type GuestNet struct {
	Address string // dotted IPv4
	Mask    string // dotted IPv4 netmask
	Gateway string // may be empty
	MAC     string
}

// BootRequest is what a guest type needs to build its command line.
type BootRequest struct {
	Args       []string // the container's process args: the app and its arguments
	HasInitrd  bool
	Net        *GuestNet
	RootfsMode string
}

// guest is one unikernel type: it knows how its kernel wants to be told
// what to run.
type guest interface {
	Cmdline(req BootRequest) (string, error)
}

// guestTypes maps the unikernelType annotation to its guest.
var guestTypes = map[string]guest{
	"linux": linuxGuest{},
}

func guestFor(unikernelType string) (guest, error) {
	g, ok := guestTypes[unikernelType]
	if !ok {
		known := make([]string, 0, len(guestTypes))
		for k := range guestTypes {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("unknown unikernelType %q (annotation %sunikernelType; known: %s)",
			unikernelType, AnnotationPrefix, strings.Join(known, ", "))
	}
	return g, nil
}
