package guestagent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/vmguard/vmguard/events"
)

// DefaultRequestTimeout bounds a Client call whose ctx has no deadline; a
// stop gets its halt timeout on top.
const DefaultRequestTimeout = 10 * time.Second

// Client calls the agent of one guest over NATS. It is safe for concurrent
// use. Error replies come back as *RemoteError, matching ErrBadRequest,
// ErrNotFound, ErrConflict, ErrTooLarge, ErrStart, ErrUnavailable or
// ErrInternal with errors.Is; no agent listening is nats.ErrNoResponders.
type Client struct {
	nc    *nats.Conn
	guest string
}

// NewClient returns a client for the agent of guest.
func NewClient(nc *nats.Conn, guest string) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("new agent client: NATS connection: missing")
	}
	if err := events.CheckName("guest", guest); err != nil {
		return nil, fmt.Errorf("new agent client: %w", err)
	}
	return &Client{nc: nc, guest: guest}, nil
}

// Guest returns the guest the client talks to.
func (c *Client) Guest() string { return c.guest }

// Run asks the agent to start a process; a repeat of req.RequestID returns
// the process the first request started.
func (c *Client) Run(ctx context.Context, req RunRequest) (RunReply, error) {
	return request[RunReply](ctx, c, EndpointRun, req, 0)
}

// Stop stops the processes req names and returns once they have exited.
func (c *Client) Stop(ctx context.Context, req StopRequest) (StopReply, error) {
	extra := req.HaltTimeout.D()
	if extra <= 0 {
		extra = DefaultHaltTimeout
	}
	return request[StopReply](ctx, c, EndpointStop, req, extra)
}

// List lists the agent's processes.
func (c *Client) List(ctx context.Context, req ListRequest) (ListReply, error) {
	return request[ListReply](ctx, c, EndpointList, req, 0)
}

// Place tells the agent which node controls its guest now (PlaceRequest).
func (c *Client) Place(ctx context.Context, req PlaceRequest) (PlaceReply, error) {
	return request[PlaceReply](ctx, c, EndpointPlace, req, placeCheckTimeout)
}

// Ping checks the agent is alive.
func (c *Client) Ping(ctx context.Context) (PingReply, error) {
	return request[PingReply](ctx, c, EndpointPing, struct{}{}, 0)
}

// request sends req to the agent's endpoint and decodes its reply, an R;
// extra is how much longer than DefaultRequestTimeout the agent may take
// where ctx has no deadline.
func request[R any](ctx context.Context, c *Client, endpoint string, req any, extra time.Duration) (R, error) {
	var reply R
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout+extra)
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return reply, fmt.Errorf("%s on guest %s: encode request: %w", endpoint, c.guest, err)
	}
	msg, err := c.nc.RequestWithContext(ctx, Subject(c.guest, endpoint), body)
	if err != nil {
		return reply, fmt.Errorf("%s on guest %s: %w", endpoint, c.guest, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return reply, fmt.Errorf("%s on guest %s: %w", endpoint, c.guest, &RemoteError{Code: code, Message: msg.Header.Get(micro.ErrorHeader)})
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return reply, fmt.Errorf("%s on guest %s: decode reply: %w", endpoint, c.guest, err)
	}
	return reply, nil
}
