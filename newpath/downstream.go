package newpath

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Headers newpath sends to the downstream services and reads from clients.
const (
	// IdempotencyKeyHeader is read from POST /orders and sent with the
	// stock reservation and the payment, which deduplicate on it.
	IdempotencyKeyHeader = "Idempotency-Key"
	// EventIDHeader carries an outbox event's id on every delivery; the
	// warehouse and mail services deduplicate on it.
	EventIDHeader = "X-Event-Id"
	// DryRunHeader set to "1" makes POST /orders and POST
	// /orders/{id}/cancel compute their answer and commit, charge and send
	// nothing (the proxy's shadow of a write).
	DryRunHeader = "X-Strangler-Dry-Run"
	// RequestIDHeader ties a request's log lines and downstream calls
	// together.
	RequestIDHeader = "X-Request-Id"
	// ReplayedHeader marks an answer replayed for an idempotency key.
	ReplayedHeader = "Idempotent-Replayed"
)

// DefaultDownstreamTimeout bounds each call to a downstream service. The
// request's own timeout (ServerOptions.RequestTimeout) bounds it further,
// and with the defaults decides.
const DefaultDownstreamTimeout = 10 * time.Second

// statusError is a downstream answer outside 2xx.
type statusError struct {
	method, path string
	code         int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d", e.method, e.path, e.code)
}

// hasStatus reports whether err is a downstream answer with status code.
func hasStatus(err error, code int) bool {
	se, ok := errors.AsType[*statusError](err)
	return ok && se.code == code
}

// isPermanent reports whether retrying err cannot help: a 4xx answer
// other than 408 and 429 says the request itself is wrong.
func isPermanent(err error) bool {
	se, ok := errors.AsType[*statusError](err)
	return ok && se.code >= 400 && se.code < 500 && se.code != http.StatusRequestTimeout && se.code != http.StatusTooManyRequests
}

// downstreamClient calls the inventory, payment, warehouse and mail
// services of docs/order-api.md §7.
type downstreamClient struct {
	base   string
	client *http.Client
	tracer trace.Tracer
}

func newDownstreamClient(base string, client *http.Client, tracer trace.Tracer) (*downstreamClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("downstream url %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("downstream url %q: want an absolute http or https URL", base)
	}
	return &downstreamClient{base: strings.TrimSuffix(base, "/"), client: client, tracer: tracer}, nil
}

// newDefaultClient pools enough idle connections per host that a
// benchmark does not churn through ephemeral ports.
func newDefaultClient(timeout time.Duration) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 512
	transport.MaxIdleConnsPerHost = 256
	transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: transport, Timeout: timeout}
}

// call sends body (raw JSON, or nil) and decodes a 2xx answer into out
// when out is not nil; any other status is a *statusError. The call is a
// client span named after method and template, path's pattern
// ("/inventory/{item_id}"), whose context the service receives in
// traceparent.
func (c *downstreamClient) call(ctx context.Context, method, template, path string, header http.Header, body []byte, out any) (err error) {
	ctx, span := c.tracer.Start(ctx, method+" "+template, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(methodAttr(method), semconv.URLTemplate(template), semconv.URLFull(c.base+path)))
	status := 0
	defer func() {
		spanErr := err
		if _, answered := errors.AsType[*statusError](err); answered {
			spanErr = nil // the status tells
		}
		endHTTPSpan(span, status, spanErr)
	}()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if id := requestIDFrom(ctx); id != "" {
		req.Header.Set(RequestIDHeader, id)
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so that the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
		return &statusError{method: method, path: path, code: resp.StatusCode}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

func (c *downstreamClient) postJSON(ctx context.Context, template, path string, header http.Header, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("POST %s: encode request: %w", path, err)
	}
	return c.call(ctx, http.MethodPost, template, path, header, body, out)
}

// keyHeader is the Idempotency-Key header, or none without a key.
func keyHeader(key string) http.Header {
	if key == "" {
		return nil
	}
	return http.Header{IdempotencyKeyHeader: {key}}
}

// inventoryItem is the answer of GET /inventory/{item_id}.
type inventoryItem struct {
	ItemID     string `json:"item_id"`
	Available  int    `json:"available"`
	PriceCents int64  `json:"price_cents"`
}

func (c *downstreamClient) inventory(ctx context.Context, itemID string) (inventoryItem, error) {
	var out inventoryItem
	err := c.call(ctx, http.MethodGet, "/inventory/{item_id}", "/inventory/"+url.PathEscape(itemID), nil, nil, &out)
	return out, err
}

// reserve decrements the item's stock; with a key a retry reserves once.
func (c *downstreamClient) reserve(ctx context.Context, itemID string, quantity int, key string) error {
	in := struct {
		Quantity int `json:"quantity"`
	}{quantity}
	return c.postJSON(ctx, "/inventory/{item_id}/reserve", "/inventory/"+url.PathEscape(itemID)+"/reserve", keyHeader(key), in, nil)
}

// payment is the answer of POST /payments.
type payment struct {
	PaymentID string `json:"payment_id"`
}

// charge charges the user's card; with a key a retry charges once. No
// order_id is sent: the order's id is only drawn after the charge, and a
// retry after a crash draws another, which the payment service would take
// for a different request under the same key.
func (c *downstreamClient) charge(ctx context.Context, userID, amountCents int64, key string) (payment, error) {
	in := struct {
		UserID      int64 `json:"user_id"`
		AmountCents int64 `json:"amount_cents"`
	}{userID, amountCents}
	var out payment
	err := c.postJSON(ctx, "/payments", "/payments", keyHeader(key), in, &out)
	return out, err
}

// deliver sends an outbox event to its receiver with its id in
// X-Event-Id. A repeated id is answered 200 by the receiver, which is a
// success here: the event was delivered before.
func (c *downstreamClient) deliver(ctx context.Context, e Event) error {
	path, err := eventPath(e.Kind)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, path, path, http.Header{EventIDHeader: {e.ID}}, e.Payload, nil)
}

// eventPath is where an event kind is delivered.
func eventPath(kind EventKind) (string, error) {
	switch kind {
	case EventOrderPaid:
		return "/warehouse/shipments", nil
	case EventOrderConfirmed:
		return "/mail/send", nil
	}
	return "", fmt.Errorf("event kind %q: no receiver", kind)
}

// requestIDKey is the context key of the request's X-Request-Id.
type requestIDKey struct{}

func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
