package legacy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// requestIDHeader is forwarded from the client request to every downstream
// call, so that one id ties the legacy chain together in the logs.
const requestIDHeader = "X-Request-Id"

// statusError is a downstream answer outside 2xx.
type statusError struct {
	method string
	path   string
	code   int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d", e.method, e.path, e.code)
}

// hasStatus reports whether err is a downstream answer with status code.
func hasStatus(err error, code int) bool {
	se, ok := errors.AsType[*statusError](err)
	return ok && se.code == code
}

// downstreamClient is how legacy calls the inventory, payment, warehouse and
// mail services: plain synchronous JSON over HTTP, no retries, no
// idempotency keys, no event ids, exactly as the old code did.
type downstreamClient struct {
	base   string
	client *http.Client
}

// call sends in as the JSON body of method path and decodes a 2xx answer
// into out (when out is not nil). Any other status is a *statusError.
func (c *downstreamClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if id := requestIDFrom(ctx); id != "" {
		req.Header.Set(requestIDHeader, id)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so the connection can be reused.
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

// inventory reads an item's price and stock.
func (c *downstreamClient) inventory(ctx context.Context, itemID string) (inventoryResponse, error) {
	var out inventoryResponse
	err := c.call(ctx, http.MethodGet, "/inventory/"+url.PathEscape(itemID), nil, &out)
	return out, err
}

// reserve decrements an item's stock; a 409 means there is not enough.
func (c *downstreamClient) reserve(ctx context.Context, itemID string, quantity int) error {
	return c.call(ctx, http.MethodPost, "/inventory/"+url.PathEscape(itemID)+"/reserve", reserveRequest{Quantity: quantity}, nil)
}

// charge charges the user's card. Legacy sends no order id (the order does
// not exist yet) and no Idempotency-Key: a retried POST /orders charges again.
func (c *downstreamClient) charge(ctx context.Context, userID, amountCents int64) (paymentResponse, error) {
	var out paymentResponse
	err := c.call(ctx, http.MethodPost, "/payments", paymentRequest{UserID: userID, AmountCents: amountCents}, &out)
	return out, err
}

// ship hands the order to the warehouse, once, without an event id.
func (c *downstreamClient) ship(ctx context.Context, o Order) error {
	req := shipmentRequest{OrderID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity}
	return c.call(ctx, http.MethodPost, "/warehouse/shipments", req, nil)
}

// confirmationTemplate is the mail template legacy sends after an order.
const confirmationTemplate = "order_confirmation"

// sendConfirmation mails the customer, once, without an event id.
func (c *downstreamClient) sendConfirmation(ctx context.Context, u User, o Order) error {
	req := mailRequest{To: u.Email, Template: confirmationTemplate, OrderID: o.ID}
	return c.call(ctx, http.MethodPost, "/mail/send", req, nil)
}

// newDownstreamClient validates base, an absolute http(s) URL.
func newDownstreamClient(base string, client *http.Client) (*downstreamClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("downstream url %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("downstream url %q: want an absolute http or https URL", base)
	}
	return &downstreamClient{base: strings.TrimSuffix(base, "/"), client: client}, nil
}

// requestIDKey is the context key of the client's X-Request-Id.
type requestIDKey struct{}

func withRequestID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
