package guestagent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
)

// Request bounds beyond MaxRequestBytes.
const (
	maxRequestIDLen = 128
	maxArgs         = 4096
)

func (a *Agent) handleRun(r micro.Request) {
	handleAsync(a, r, parseRun, a.run, "agent is shutting down; retry on the next agent")
}

func (a *Agent) handleStop(r micro.Request) {
	handleAsync(a, r, parseStop, a.stop, "agent is shutting down; it stops every process itself")
}

// handleAsync answers r on a goroutine of its own (goRequest), since do
// may take long: parse decodes and checks the request's body (its error is
// replied at once), do acts on it and its reply or error is the answer.
// While the agent shuts down the request is refused as unavailable, with
// closing as the message.
func handleAsync[Req, Reply any](a *Agent, r micro.Request, parse func([]byte) (Req, error), do func(Req) (Reply, error), closing string) {
	req, err := parse(r.Data())
	if err != nil {
		replyError(r, err)
		return
	}
	ar := a.detach(r)
	if !a.goRequest(func() {
		reply, err := do(req)
		if err != nil {
			ar.replyError(err)
			return
		}
		ar.respondJSON(reply)
	}) {
		replyError(r, &RemoteError{CodeUnavailable, closing})
	}
}

func (a *Agent) handleList(r micro.Request) {
	req, err := parseList(r.Data())
	if err != nil {
		replyError(r, err)
		return
	}
	_ = r.RespondJSON(a.list(req))
}

func (a *Agent) handlePing(r micro.Request) {
	var req struct{}
	if err := decodeRequest(r.Data(), &req, true); err != nil {
		replyError(r, err)
		return
	}
	a.mu.Lock()
	reply := PingReply{Guest: a.cfg.Guest, Node: a.fence.node, Version: a.cfg.Version, Running: a.running,
		MaxProcs: a.cfg.MaxProcs, Started: a.started.UTC(), Lease: a.fence.state}
	a.mu.Unlock()
	reply.Undelivered = a.journal.pending()
	_ = r.RespondJSON(reply)
}

// goRequest runs f on its own goroutine unless the agent is shutting down.
func (a *Agent) goRequest(f func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
	return true
}

// stop stops the processes req names and waits for their exits.
func (a *Agent) stop(req StopRequest) (StopReply, error) {
	var targets []*proc
	a.mu.Lock()
	if req.RequestID != "" {
		p := a.procs[req.RequestID]
		if p == nil {
			a.mu.Unlock()
			return StopReply{}, &RemoteError{CodeNotFound, fmt.Sprintf("no process with request id %q (never started here, or forgotten)", req.RequestID)}
		}
		targets = append(targets, p)
	} else {
		for k, p := range a.services {
			if k.pkg == req.Package && (req.Service == "" || k.svc == req.Service) {
				targets = append(targets, p)
			}
		}
	}
	a.mu.Unlock()
	for _, p := range targets {
		a.stopProc(p, ReasonStopped, haltTimeout(req.HaltTimeout.D(), p.haltTimeout))
	}
	reply := StopReply{Processes: []ProcessInfo{}}
	for _, p := range targets {
		<-p.ready
		if p.startErr != nil {
			continue
		}
		<-p.done
		a.mu.Lock()
		reply.Processes = append(reply.Processes, a.infoLocked(p))
		a.mu.Unlock()
	}
	sortInfos(reply.Processes)
	return reply, nil
}

func (a *Agent) list(req ListRequest) ListReply {
	a.mu.Lock()
	defer a.mu.Unlock()
	reply := ListReply{Guest: a.cfg.Guest, Processes: []ProcessInfo{}}
	for _, p := range a.procs {
		if req.Package != "" && p.req.Package != req.Package {
			continue
		}
		if p.state == StateExited && !req.Exited {
			continue
		}
		reply.Processes = append(reply.Processes, a.infoLocked(p))
	}
	sortInfos(reply.Processes)
	return reply
}

func sortInfos(ps []ProcessInfo) {
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].StartedAt.Equal(ps[j].StartedAt) {
			return ps[i].StartedAt.Before(ps[j].StartedAt)
		}
		return ps[i].RequestID < ps[j].RequestID
	})
}

// decodeRequest decodes one JSON object strictly: bounded size, no unknown
// fields, nothing after it. An empty body is {} when allowEmpty.
func decodeRequest(data []byte, v any, allowEmpty bool) error {
	if len(data) > MaxRequestBytes {
		return &RemoteError{CodeTooLarge, fmt.Sprintf("request is %d bytes, more than the %d allowed", len(data), MaxRequestBytes)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest(errors.New("empty body: want a JSON object"))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(fmt.Errorf("decode JSON: %v", err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(errors.New("decode JSON: unexpected data after the object"))
	}
	return nil
}

func badRequest(err error) error { return &RemoteError{CodeBadRequest, err.Error()} }

// asyncReply answers a request from another goroutine than its handler's.
// micro reads a request's error state when the handler returns, so replying
// through the micro.Request later races with it; this publishes the same
// reply (micro's error headers included) to the request's reply subject.
type asyncReply struct {
	nc    *nats.Conn
	reply string
}

func (a *Agent) detach(r micro.Request) asyncReply {
	return asyncReply{nc: a.cfg.Conn, reply: r.Reply()}
}

func (ar asyncReply) respondJSON(v any) {
	if ar.reply == "" {
		return
	}
	_ = ar.nc.Publish(ar.reply, mustJSON(v))
}

func (ar asyncReply) replyError(err error) {
	if ar.reply == "" {
		return
	}
	code, msg := errorReply(err)
	m := nats.NewMsg(ar.reply)
	m.Header.Set(micro.ErrorHeader, msg)
	m.Header.Set(micro.ErrorCodeHeader, code)
	_ = ar.nc.PublishMsg(m)
}

// replyError sends err as a micro error reply.
func replyError(r micro.Request, err error) {
	code, msg := errorReply(err)
	_ = r.Error(code, msg, nil)
}

// errorReply is the code and message of an error reply. The message
// travels in a header and ends up in event reasons: one line, valid UTF-8,
// within the schemas' limit, whichever way the reply is sent.
func errorReply(err error) (code, msg string) {
	var re *RemoteError
	if !errors.As(err, &re) {
		re = &RemoteError{CodeInternal, err.Error()}
	}
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(re.Message)
	return re.Code, events.Clip(msg, events.MaxReason)
}

func validateRun(req *RunRequest) error {
	if err := events.CheckName("package", req.Package); err != nil {
		return err
	}
	if err := events.CheckName("service", req.Service); err != nil {
		return err
	}
	if err := checkRequestID("request_id", req.RequestID); err != nil {
		return err
	}
	if req.Node != "" {
		if err := events.CheckName("node", req.Node); err != nil {
			return err
		}
	}
	if req.CauseID != "" {
		if err := checkRequestID("cause_id", req.CauseID); err != nil {
			return err
		}
	}
	if len(req.Argv) == 0 {
		return errors.New("argv: missing: give the command and its arguments, e.g. [\"/usr/sbin/httpd\", \"-DFOREGROUND\"]")
	}
	if req.Argv[0] == "" {
		return errors.New("argv[0]: empty")
	}
	if len(req.Argv) > maxArgs {
		return fmt.Errorf("argv: %d arguments, at most %d", len(req.Argv), maxArgs)
	}
	for i, s := range req.Argv {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("argv[%d]: contains a NUL byte", i)
		}
	}
	for k, v := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("env: %q is not a variable name", k)
		}
		if strings.HasPrefix(k, "VMGUARD_") {
			return fmt.Errorf("env: %s: names starting with VMGUARD_ are set by the agent", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("env: %s: value contains a NUL byte", k)
		}
	}
	if req.Dir != "" && (!filepath.IsAbs(req.Dir) || strings.IndexByte(req.Dir, 0) >= 0) {
		return fmt.Errorf("dir: %q is not an absolute path", req.Dir)
	}
	if d := req.HaltTimeout.D(); d > MaxHaltTimeout {
		return fmt.Errorf("halt_timeout: %s is longer than %s", d, MaxHaltTimeout)
	}
	return nil
}

func validateStop(req *StopRequest) error {
	if d := req.HaltTimeout.D(); d > MaxHaltTimeout {
		return fmt.Errorf("halt_timeout: %s is longer than %s", d, MaxHaltTimeout)
	}
	if req.RequestID != "" {
		if req.Package != "" || req.Service != "" {
			return errors.New("give either request_id, or package (and service), not both")
		}
		return checkRequestID("request_id", req.RequestID)
	}
	if req.Package == "" {
		return errors.New("request_id or package: missing")
	}
	if err := events.CheckName("package", req.Package); err != nil {
		return err
	}
	if req.Service != "" {
		return events.CheckName("service", req.Service)
	}
	return nil
}

// checkRequestID accepts 1 to 128 bytes of printable UTF-8 without spaces.
func checkRequestID(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s: missing", field)
	}
	if len(s) > maxRequestIDLen {
		return fmt.Errorf("%s: %d bytes, at most %d", field, len(s), maxRequestIDLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not valid UTF-8", field)
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("%s: %q holds a space or control character", field, s)
		}
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the agent's own plain structs are marshalled here.
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return b
}
