package lifecycle

import (
	"fmt"
	"strings"
	"time"
)

// Timeline records how long each step of a Create or a Delete took. The
// shim logs it at debug level, and make bench reads it for the breakdown
// of a container's life (where start-up time goes); it costs one clock read per step. A
// nil timeline records nothing (the delete command, a failed Create).
type Timeline struct {
	last  time.Time
	steps []string
}

func NewTimeline() *Timeline { return &Timeline{last: time.Now()} }

// Mark closes the step that ends here.
func (t *Timeline) Mark(step string) {
	if t == nil {
		return
	}
	now := time.Now()
	t.steps = append(t.steps, fmt.Sprintf("%s=%.2fms", step, float64(now.Sub(t.last).Microseconds())/1000))
	t.last = now
}

func (t *Timeline) String() string { return strings.Join(t.steps, " ") }
