package eventqueue

import (
	eventstypes "github.com/containerd/containerd/api/events"
	ctrdruntime "github.com/containerd/containerd/v2/core/runtime"
)

// Topic returns the containerd event topic of an event.
func Topic(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return ctrdruntime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return ctrdruntime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return ctrdruntime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return ctrdruntime.TaskDeleteEventTopic
	case *eventstypes.TaskPaused:
		return ctrdruntime.TaskPausedEventTopic
	case *eventstypes.TaskResumed:
		return ctrdruntime.TaskResumedEventTopic
	case *eventstypes.TaskOOM:
		return ctrdruntime.TaskOOMEventTopic
	case *eventstypes.TaskExecAdded:
		return ctrdruntime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return ctrdruntime.TaskExecStartedEventTopic
	}
	return ctrdruntime.TaskUnknownTopic
}
