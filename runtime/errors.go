package runtime

import (
	"github.com/containerd/errdefs"
)

// Errors are errdefs errors so that callers can map them to API codes.
var (
	errNotFound           = errdefs.ErrNotFound
	errFailedPrecondition = errdefs.ErrFailedPrecondition
	errInvalidArgument    = errdefs.ErrInvalidArgument
	errNotImplemented     = errdefs.ErrNotImplemented
)
