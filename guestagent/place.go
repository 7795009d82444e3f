package guestagent

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
)

// placeCheckTimeout bounds the log read that confirms a placement; a
// check that runs out is answered 503 (try again), not 409.
const placeCheckTimeout = 5 * time.Second

func (a *Agent) handlePlace(r micro.Request) {
	handleAsync(a, r, parsePlace, a.place, "agent is shutting down")
}

// parsePlace decodes and checks the body of a place request (parseBody).
func parsePlace(data []byte) (PlaceRequest, error) {
	return parseBody(data, false, func(req *PlaceRequest) error {
		if err := events.CheckName("package", req.Package); err != nil {
			return err
		}
		if err := events.CheckName("node", req.Node); err != nil {
			return err
		}
		if req.Epoch == 0 {
			return fmt.Errorf("epoch: missing: the placement epoch the host manager acts for")
		}
		return nil
	})
}

// place applies a placement a host manager names (PlaceRequest, or a run
// with a node): what the agent may believe about where it runs.
//
//   - an epoch older than the highest one the agent was placed under for
//     the package is refused (409): its host manager acts on a placement
//     the log has replaced;
//   - the node the agent follows already: the epoch is recorded, nothing
//     else changes (that node's lease is what fences the agent anyway);
//   - another node (or the first one, for an agent started without a
//     node): the package's last package.placed in the log must name that
//     node and epoch, or the request is refused (409, saying what the log
//     says); then the agent follows that node's lease instead of the old
//     one's.
//
// An agent that does not fence only records the epoch.
func (a *Agent) place(req PlaceRequest) (PlaceReply, error) {
	a.placeMu.Lock()
	defer a.placeMu.Unlock()
	a.mu.Lock()
	known, node := a.epochs[req.Package], a.fence.node
	a.mu.Unlock()
	if req.Epoch < known {
		return PlaceReply{}, &RemoteError{CodeConflict, fmt.Sprintf("package %s: epoch %d is older than epoch %d the agent was placed under; the host manager acts on a placement the log has replaced",
			req.Package, req.Epoch, known)}
	}
	if !a.fencing() || req.Node == node {
		return a.placed(req, false), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), placeCheckTimeout)
	defer cancel()
	pl, err := a.lastPlacement(ctx, req.Package)
	if err != nil {
		return PlaceReply{}, &RemoteError{CodeUnavailable, fmt.Sprintf("package %s: cannot confirm placement on node %s epoch %d: %v", req.Package, req.Node, req.Epoch, err)}
	}
	if pl.Node != req.Node || pl.Epoch != req.Epoch {
		return PlaceReply{}, &RemoteError{CodeConflict, fmt.Sprintf("package %s: the log places it on node %s under epoch %d, not on node %s under epoch %d",
			req.Package, orNone(pl.Node), pl.Epoch, req.Node, req.Epoch)}
	}
	return a.placed(req, true), nil
}

// placed records req, switching to its node if follow is set.
func (a *Agent) placed(req PlaceRequest, follow bool) PlaceReply {
	a.mu.Lock()
	a.epochs[req.Package] = max(a.epochs[req.Package], req.Epoch)
	old := a.fence.node
	changed := follow && old != req.Node
	if changed {
		// The new node's key has revisions of its own; the timer set by
		// the last renewal seen keeps running: the new node's lease must be
		// seen renewed before it fires, or the agent fences.
		a.fence.node, a.fence.rev, a.fence.stamp = req.Node, 0, time.Time{}
	}
	reply := PlaceReply{Node: a.fence.node, Epoch: a.epochs[req.Package], Lease: a.fence.state, Changed: changed}
	a.mu.Unlock()
	if changed {
		a.log.Info("following node: the log places the guest there", "package", req.Package, "node", req.Node, "epoch", req.Epoch, "was", orNone(old))
		select {
		case a.fence.kick <- struct{}{}: // the watch follows the new key
		default:
		}
	}
	return reply
}

// lastPlacement reads the package's last package.placed from the log.
func (a *Agent) lastPlacement(ctx context.Context, pkg string) (events.PackagePlaced, error) {
	if a.placeLog == nil {
		l, err := events.Open(ctx, a.cfg.Conn, events.WithoutCreate(), events.WithLogger(a.log))
		if err != nil {
			return events.PackagePlaced{}, err
		}
		a.placeLog = l
	}
	e, ok, err := a.placeLog.Last(ctx, events.PackageSubject(pkg, "package", "placed"))
	if err != nil {
		return events.PackagePlaced{}, err
	}
	if !ok {
		return events.PackagePlaced{}, nil
	}
	d, ok := e.Data.(events.PackagePlaced)
	if !ok {
		return events.PackagePlaced{}, fmt.Errorf("last placement of %s: %s is not a package.placed", pkg, e.Type())
	}
	return d, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
