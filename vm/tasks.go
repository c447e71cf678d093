package vm

import (
	"context"
	"encoding/json"
	"sync"
)

// Handler answers one request a client sends the hostagent (Client.Call): args is the
// caller's JSON ("null" when it sent none); the reply is marshalled to JSON. Its ctx
// ends when the VM stops. Requests on one connection are answered in order, so a
// handler that waits (for a state, say) holds up that connection's later requests.
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Reporter returns a Task's state for lab status (marshalled to JSON in TaskHealth.Detail).
// It is called for each status request, so the state is never stale.
type Reporter func(ctx context.Context) any

// registry holds the handlers and reporters Tasks (and the hostagent itself) register.
type registry struct {
	mu        sync.Mutex
	handlers  map[string]Handler
	reporters map[string]Reporter // by task name
}

func newRegistry() *registry {
	return &registry{handlers: map[string]Handler{}, reporters: map[string]Reporter{}}
}

// Handle makes the hostagent answer requests named name (Client.Call(ctx, name, ...))
// with h, from now until it exits. Names are the hostagent's, shared by all Tasks:
// prefix them with the Task's ("relay.stop"). A second Handle for a name replaces the first.
func (e *Env) Handle(name string, h Handler) {
	e.reg.mu.Lock()
	defer e.reg.mu.Unlock()
	e.reg.handlers[name] = h
}

// Report makes lab status show what f returns as this Task's detail.
func (e *Env) Report(f Reporter) {
	e.reg.mu.Lock()
	defer e.reg.mu.Unlock()
	e.reg.reporters[e.task] = f
}

func (r *registry) handler(name string) Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handlers[name]
}

func (r *registry) reporter(task string) Reporter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reporters[task]
}

// TaskState is a Task's lifecycle state.
type TaskState string

const (
	TaskRunning TaskState = "running"
	TaskDone    TaskState = "done"   // returned after the VM stopped, or with no error
	TaskFailed  TaskState = "failed" // returned an error while the VM ran
)

// TaskHealth is one Task's state.
type TaskHealth struct {
	Name  string    `json:"name"`
	State TaskState `json:"state"`
	Error string    `json:"error,omitempty"`
	// Detail is what the Task reports (Env.Report), computed for this request.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// startTasks starts each Task with its own Env (a copy of env naming it) under ctx and
// records its end in the health; the WaitGroup is done when all have returned.
func (a *agent) startTasks(ctx context.Context, env *Env) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i, t := range a.h.Tasks {
		a.setHealth(func(h *Health) { h.Tasks = append(h.Tasks, TaskHealth{Name: t.Name, State: TaskRunning}) })
		tenv := *env
		tenv.task = t.Name
		tenv.Logger = env.Logger.With("task", t.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := t.Run(ctx, &tenv)
			failed := err != nil && ctx.Err() == nil
			a.setHealth(func(h *Health) {
				h.Tasks[i].State = TaskDone
				if failed {
					h.Tasks[i].State, h.Tasks[i].Error = TaskFailed, err.Error()
				}
			})
			if failed {
				a.log.Error("task failed", "task", t.Name, "err", err)
			}
		}()
	}
	return &wg
}

// callError is the payload of a refused request: the handler's error, and whether it
// was QEMU not answering (errors.Is(err, ErrQEMUNotResponding) on the client's side).
type callError struct {
	Error         string `json:"error"`
	NotResponding bool   `json:"qemu_not_responding,omitempty"`
}

func (e callError) err(name string) error {
	return &remoteError{name: name, msg: e.Error, notResponding: e.NotResponding}
}

// remoteError is a handler's error as the client sees it.
type remoteError struct {
	name, msg     string
	notResponding bool
}

func (e *remoteError) Error() string { return "vm: hostagent " + e.name + ": " + e.msg }

func (e *remoteError) Is(target error) bool {
	return e.notResponding && target == ErrQEMUNotResponding
}
