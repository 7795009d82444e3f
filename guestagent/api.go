package guestagent

import (
	"errors"
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/duration"
)

// ServiceName is the NATS micro service name every guest agent registers;
// `nats micro ls` lists one instance per guest, `nats micro info
// vmguard-agent` shows its endpoints.
const ServiceName = "vmguard-agent"

// Endpoint names under Subject(guest, name).
const (
	EndpointRun  = "run"
	EndpointStop = "stop"
	EndpointList = "list"
	EndpointPing = "ping"
	// EndpointPlace tells the agent which node it runs on now (PlaceRequest).
	EndpointPlace = "place"
)

// MaxRequestBytes bounds a request payload; larger ones get ErrTooLarge.
const MaxRequestBytes = 64 << 10

// DefaultHaltTimeout is how long a stop waits after SIGTERM before SIGKILL
// when neither the run nor the stop request says.
const DefaultHaltTimeout = 10 * time.Second

// MaxHaltTimeout bounds halt_timeout in requests.
const MaxHaltTimeout = time.Hour

// Exit reasons of events.ProcessExited set by the agent. An empty reason is a
// real exit (any exit code, 0 included, or a signal the agent did not send).
const (
	ReasonStopped      = "stopped"       // a stop request ended it
	ReasonAgentStopped = "agent_stopped" // the agent was stopped (SIGTERM) and stopped it
	ReasonAgentRestart = "agent_restart" // the previous agent died while it ran; outcome unknown
	ReasonFenced       = "fenced"        // the node's lease lapsed and the agent stopped it
)

// Process states in ProcessInfo.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateExited   = "exited"
)

// Subject returns the request subject of an endpoint of the agent of guest:
// vmguard.agent.<guest>.<endpoint>.
func Subject(guest, endpoint string) string { return "vmguard.agent." + guest + "." + endpoint }

// HeartbeatSubject returns the core NATS subject the agent of guest sends
// heartbeats on: vmguard.hb.guest.<guest>.
func HeartbeatSubject(guest string) string { return "vmguard.hb.guest." + guest }

// Source returns the CloudEvents source of events written by the agent of
// guest: /vmguard/guests/<guest>/agent.
func Source(guest string) string { return events.GuestSource(guest) }

// RunRequest asks the agent to start one process. JSON shape:
//
//	{"package":"web","service":"httpd","argv":["/usr/sbin/httpd","-DFOREGROUND"],
//	 "env":{"K":"V"},"dir":"/srv","request_id":"0190...","cause_id":"0190...",
//	 "epoch":3,"halt_timeout":"10s"}
//
// Unknown fields are refused. A repeat of a RequestID returns the process the
// first one started (running or exited) and starts nothing.
type RunRequest struct {
	// Package and Service name the process (valid names: letters, digits, '-', '_').
	Package string `json:"package"`
	Service string `json:"service"`
	// Argv is the command; Argv[0] without a '/' is looked up in PATH
	// (Env's PATH if set, else the agent's).
	Argv []string `json:"argv"`
	// Env is added to the agent's own environment (it overrides same-named
	// variables); names starting with VMGUARD_ are reserved.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the absolute working directory ("" = the agent's).
	Dir string `json:"dir,omitempty"`
	// RequestID makes the run idempotent (1 to 128 printable characters):
	// "<guest.started id>/<service>" for an initial start, the
	// service.restarting event id for a restart.
	RequestID string `json:"request_id"`
	// CauseID is the causeid of the process.started and process.exited
	// events: the id of the decision that asked. Default: RequestID without
	// a trailing "/<service>".
	CauseID string `json:"cause_id,omitempty"`
	// Epoch is the placement epoch, copied into the process events.
	Epoch uint64 `json:"epoch"`
	// Node is the node the host manager that asks runs on (optional). With
	// it the run is also a PlaceRequest for Package, Node and Epoch: a run
	// for an epoch older than one the agent was placed under is refused
	// (409), and one naming another node than the agent follows makes it
	// check the log and follow that node first (see PlaceRequest).
	Node string `json:"node,omitempty"`
	// HaltTimeout is how long a stop waits after SIGTERM before SIGKILL, as
	// a Go duration string ("10s", "500ms"); absent or "0s": 10s.
	HaltTimeout duration.Duration `json:"halt_timeout,omitempty"`
}

// PlaceRequest tells the agent that the host manager of Node controls its
// guest now, for Package under placement Epoch: after a failover (the guest
// booted on another host with a stale --node) or a live migration (the
// guest kept running). JSON shape: {"package":"web","node":"node2","epoch":4}.
//
// The agent trusts it only as far as the log agrees: it reads the package's
// last package.placed (which only the controller and operators can write)
// and follows Node only if that placement names Node and Epoch. A request
// for an epoch older than one it was placed under, or that the log does not
// confirm, is refused (409) and changes nothing. Following a node means
// watching that node's lease instead of the old one's, from now on: the old
// node's lease no longer fences the agent, the new one's does. Processes keep
// running; the deadline set by the last renewal seen stays, so the new
// node's lease must be seen renewed within it or the agent fences.
type PlaceRequest struct {
	Package string `json:"package"`
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
}

// PlaceReply answers a PlaceRequest: the node the agent follows now, the
// epoch it is placed under and its lease state.
type PlaceReply struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
	Lease string `json:"lease,omitempty"`
	// Changed is true when the agent switched to Node for this request.
	Changed bool `json:"changed,omitempty"`
}

// RunReply answers a RunRequest. Process.State is running (or already
// exited for a very short process or a repeat); its process.started event is
// on disk in the agent's spool and reaches the log in order with its exit.
type RunReply struct {
	Process ProcessInfo `json:"process"`
	// Duplicate is true when the request id was seen before and nothing was
	// started.
	Duplicate bool `json:"duplicate,omitempty"`
}

// StopRequest asks the agent to stop processes: the one started by
// RequestID, or else every running process of Package (only Service's, if
// set). Stopping sends SIGTERM to the process group, then SIGKILL after the
// halt timeout. The reply comes once they have all exited. JSON shape:
//
//	{"request_id":"0190..."}  or  {"package":"web","service":"httpd","halt_timeout":"5s"}
type StopRequest struct {
	RequestID string `json:"request_id,omitempty"`
	Package   string `json:"package,omitempty"`
	Service   string `json:"service,omitempty"`
	// HaltTimeout overrides the run request's halt timeout (absent or "0s":
	// keep it).
	HaltTimeout duration.Duration `json:"halt_timeout,omitempty"`
}

// StopReply lists the processes the stop covered, each with its exit. An
// already exited process is listed as it ended; a service stop that found
// nothing running lists nothing.
type StopReply struct {
	Processes []ProcessInfo `json:"processes"`
}

// ListRequest selects what list returns; an empty body lists every process
// that runs now. JSON shape: {"package":"web","exited":true}.
type ListRequest struct {
	// Package limits the list to one package ("" = all).
	Package string `json:"package,omitempty"`
	// Exited adds recently exited processes the agent still remembers.
	Exited bool `json:"exited,omitempty"`
}

// ListReply lists processes, oldest start first.
type ListReply struct {
	Guest     string        `json:"guest"`
	Processes []ProcessInfo `json:"processes"`
}

// PingReply says the agent is alive and what it runs.
type PingReply struct {
	Guest    string    `json:"guest"`
	Node     string    `json:"node,omitempty"`
	Version  string    `json:"version"`
	Running  int       `json:"running"`
	MaxProcs int       `json:"max_procs"`
	Started  time.Time `json:"started"`
	// Undelivered counts events spooled but not yet acknowledged by the log.
	Undelivered int `json:"undelivered"`
	// Lease is the agent's view of its node's lease: LeaseWaiting,
	// LeaseHeld or LeaseFenced; empty without a node.
	Lease string `json:"lease,omitempty"`
}

// ProcessInfo describes one process the agent started.
type ProcessInfo struct {
	RequestID string   `json:"request_id"`
	Package   string   `json:"package"`
	Service   string   `json:"service"`
	Argv      []string `json:"argv"`
	Epoch     uint64   `json:"epoch"`
	PID       int      `json:"pid"`
	// State is starting, running, stopping or exited.
	State     string    `json:"state"`
	StartedAt time.Time `json:"started_at"`
	// StartedEventID is the id of its process.started event.
	StartedEventID string `json:"started_event_id"`
	// Exit is set once it exited.
	Exit *ExitInfo `json:"exit,omitempty"`
}

// ExitInfo is how a process ended, as in its process.exited event.
type ExitInfo struct {
	// ExitCode is the exit status, or -1 when a signal ended the process
	// (Signal names it, e.g. "SIGKILL") or the outcome is unknown
	// (Reason agent_restart).
	ExitCode  int       `json:"exit_code"`
	Signal    string    `json:"signal,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	RuntimeMS int64     `json:"runtime_ms"`
	At        time.Time `json:"at"`
	Output    []string  `json:"output,omitempty"`
	// EventID is the id of its process.exited event.
	EventID string `json:"event_id"`
}

// Heartbeat is the JSON body of a heartbeat on HeartbeatSubject(guest).
type Heartbeat struct {
	Guest   string    `json:"guest"`
	Running int       `json:"running"`
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Node    string    `json:"node,omitempty"`
}

// Error codes of micro error replies (the Nats-Service-Error-Code header).
const (
	CodeBadRequest  = "400"
	CodeNotFound    = "404"
	CodeConflict    = "409"
	CodeTooLarge    = "413"
	CodeStart       = "422"
	CodeInternal    = "500"
	CodeUnavailable = "503"
)

// Errors returned by Client calls for error replies; match them with errors.Is.
var (
	// ErrBadRequest: the request was malformed; nothing changed.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: no process has that request id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the service already runs under another request id, or
	// the request id was used for another service.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: the request exceeded MaxRequestBytes.
	ErrTooLarge = errors.New("request too large")
	// ErrStart: the process could not be started (e.g. no such executable).
	ErrStart = errors.New("start failed")
	// ErrUnavailable: the agent is at --max-procs, shutting down, or its
	// node's lease is not held (not seen yet, or lapsed: fenced).
	ErrUnavailable = errors.New("unavailable")
	// ErrInternal: the agent failed (e.g. its spool could not be written).
	ErrInternal = errors.New("internal error")
)

var codeErrors = map[string]error{
	CodeBadRequest:  ErrBadRequest,
	CodeNotFound:    ErrNotFound,
	CodeConflict:    ErrConflict,
	CodeTooLarge:    ErrTooLarge,
	CodeStart:       ErrStart,
	CodeInternal:    ErrInternal,
	CodeUnavailable: ErrUnavailable,
}

// RemoteError is an error reply from an agent.
type RemoteError struct {
	Code    string
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string { return fmt.Sprintf("agent: %s (%s)", e.Message, e.Code) }

// Unwrap maps the code to its sentinel (ErrBadRequest, ErrNotFound, ...).
func (e *RemoteError) Unwrap() error { return codeErrors[e.Code] }

// InboxPrefix is the inbox prefix of a guest's agent connection
// (nats.CustomInboxPrefix): replies to the agent come to inboxes of its own,
// so that the guest's NATS user may read its own replies only.
func InboxPrefix(guest string) string { return "_INBOX_" + guest }
