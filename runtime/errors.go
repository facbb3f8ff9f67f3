package runtime

import (
	"errors"

	"github.com/containerd/errdefs"
)

// ErrNotUnikernel is returned by Create for a container whose image names
// no unikernel: the caller runs it as a plain container instead.
var ErrNotUnikernel = errors.New("not a unikernel container")

// Errors are errdefs errors so that callers can map them to API codes.
var (
	errNotFound           = errdefs.ErrNotFound
	errFailedPrecondition = errdefs.ErrFailedPrecondition
	errInvalidArgument    = errdefs.ErrInvalidArgument
	errNotImplemented     = errdefs.ErrNotImplemented
)
