package cniapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrUnreachable wraps every failure to reach the daemon at all (no socket,
// connection refused, timeout before an answer). The plugin maps it to CNI
// error code 11, "try again later".
var ErrUnreachable = errors.New("meshless daemon unreachable")

// ErrNotFound is returned by Get when the daemon has no such registration.
var ErrNotFound = errors.New("not registered")

// Client talks to the daemon over its unix socket.
type Client struct {
	// Socket is the daemon's unix socket path.
	Socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon serving on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{Socket: socket, hc: &http.Client{Transport: tr}}
}

// Register registers pod and returns once its listeners are open.
func (c *Client) Register(ctx context.Context, pod *Pod) (*PodStatus, error) {
	var st PodStatus
	if err := c.do(ctx, http.MethodPost, "/v1/pods", pod, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Get returns the registration of a, or ErrNotFound.
func (c *Client) Get(ctx context.Context, a Attachment) (*PodStatus, error) {
	var st PodStatus
	if err := c.do(ctx, http.MethodGet, "/v1/pods/"+a.Key(), nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Deregister removes the registration of a; an absent one is not an error.
func (c *Client) Deregister(ctx context.Context, a Attachment) error {
	return c.do(ctx, http.MethodDelete, "/v1/pods/"+a.Key(), nil, nil)
}

// Ready returns nil when the daemon is ready to register pods.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/ready", nil, nil)
}

// GC deregisters every attachment not in valid.
func (c *Client) GC(ctx context.Context, valid []Attachment) (*GCResponse, error) {
	var resp GCResponse
	if err := c.do(ctx, http.MethodPost, "/v1/gc", &GCRequest{Valid: valid}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// List returns every registration.
func (c *Client) List(ctx context.Context) ([]PodStatus, error) {
	var pods []PodStatus
	if err := c.do(ctx, http.MethodGet, "/v1/pods", nil, &pods); err != nil {
		return nil, err
	}
	return pods, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://meshlessd"+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%w at %s: read answer: %w", ErrUnreachable, c.Socket, err)
	}
	if resp.StatusCode == http.StatusNotFound && method == http.MethodGet {
		return ErrNotFound
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// StatusError is a non-2xx answer from the daemon.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("daemon answered %d: %s", e.Code, e.Message)
}

// NotReady reports whether the daemon refused because it is not ready yet;
// the plugin treats that like an unreachable daemon (code 11).
func (e *StatusError) NotReady() bool { return e.Code == http.StatusServiceUnavailable }
