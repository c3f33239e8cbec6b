package newpath

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// MaxQuantity is the largest quantity one order may ask for.
const MaxQuantity = 100

// MaxIdempotencyKeyLength bounds Idempotency-Key, as payment APIs do.
const MaxIdempotencyKeyLength = 255

// DryRunPaymentID stands in for the payment id of a dry run, which charges
// nothing. The proxy ignores payment_id when comparing (a generated field).
const DryRunPaymentID = "pay_dry_run"

// Validation messages of POST /orders, part of the contract.
const (
	msgInvalidJSON = "invalid JSON body"
	msgUserID      = "user_id must be a positive integer"
	msgItemID      = "item_id must be a non-empty string"
	msgQuantity    = "quantity must be an integer between 1 and 100"
)

// createOrderRequest is a validated POST /orders body.
type createOrderRequest struct {
	UserID   int64  `json:"user_id"`
	ItemID   string `json:"item_id"`
	Quantity int    `json:"quantity"`
}

// parseCreateOrder validates a POST /orders body exactly as legacy does:
// keys matched exactly, unknown keys ignored, fields checked in the order
// user_id, item_id, quantity, and only the first problem reported.
func parseCreateOrder(body []byte) (createOrderRequest, string) {
	var fields map[string]json.RawMessage
	if !isJSONObject(body) || json.Unmarshal(body, &fields) != nil {
		return createOrderRequest{}, msgInvalidJSON
	}
	var req createOrderRequest
	if json.Unmarshal(fields["user_id"], &req.UserID) != nil || req.UserID < 1 {
		return createOrderRequest{}, msgUserID
	}
	if json.Unmarshal(fields["item_id"], &req.ItemID) != nil || req.ItemID == "" {
		return createOrderRequest{}, msgItemID
	}
	if json.Unmarshal(fields["quantity"], &req.Quantity) != nil || req.Quantity < 1 || req.Quantity > MaxQuantity {
		return createOrderRequest{}, msgQuantity
	}
	return req, ""
}

// fingerprint identifies a request for its idempotency key: the decoded
// request, so that whitespace, key order and keys the API ignores do not
// make a retry "different".
func (r createOrderRequest) fingerprint() string {
	canonical, _ := json.Marshal(r)
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

// answer is the outcome of POST /orders.
type answer struct {
	status   int
	body     []byte
	outcome  string
	replayed bool
}

func errorAnswer(status int, msg string) answer {
	outcome := outcomeRejected
	if status >= 500 {
		outcome = outcomeFailed
	}
	return answer{status: status, body: errorJSON(msg), outcome: outcome}
}

var outOfStockAnswer = answer{status: http.StatusOK, body: []byte(`{"status":"failed","reason":"out_of_stock"}`), outcome: outcomeOutOfStock}

func (s *Server) handleCreateOrder(w http.ResponseWriter, r *http.Request) {
	a := s.createOrder(w, r)
	s.metrics.order(a.outcome)
	if a.replayed {
		s.metrics.replays.Inc()
		w.Header().Set(ReplayedHeader, "true")
	}
	writeRawJSON(w, a.status, a.body)
}

func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) answer {
	body, err := readBody(w, r)
	if errors.Is(err, errBodyTooLarge) {
		return errorAnswer(http.StatusRequestEntityTooLarge, "request body too large")
	}
	if err != nil {
		return errorAnswer(http.StatusBadRequest, msgInvalidJSON)
	}
	req, msg := parseCreateOrder(body)
	if msg != "" {
		return errorAnswer(http.StatusBadRequest, msg)
	}
	key := r.Header.Get(IdempotencyKeyHeader)
	if len(key) > MaxIdempotencyKeyLength {
		return errorAnswer(http.StatusBadRequest, fmt.Sprintf("Idempotency-Key must be at most %d characters", MaxIdempotencyKeyLength))
	}
	p := placement{
		req:         req,
		key:         key,
		fingerprint: req.fingerprint(),
		dryRun:      r.Header.Get(DryRunHeader) == "1",
		// The server span's, so that the delivery is its child; without
		// a tracer, the caller's.
		traceParent: traceParentOf(r.Context()),
	}
	a, err := s.placeOrder(r.Context(), p)
	if err != nil {
		s.logger.ErrorContext(r.Context(), "order request failed", "request_id", requestIDFrom(r.Context()),
			"status", a.status, "idempotency_key", key, "dry_run", p.dryRun, "error", err)
	}
	return a
}

// placement is one validated POST /orders.
type placement struct {
	req         createOrderRequest
	key         string
	fingerprint string
	dryRun      bool
	traceParent string
}

// placeOrder is newpath's process_order. With an idempotency key, its
// steps are ordered so that a crash anywhere charges at most once per key
// and loses no charge:
//
//  1. a key already answered is replayed (or 422 for another request);
//  2. read the user and the item's stock and price (nothing written);
//  3. BEGIN, and claim the key in that transaction: a concurrent request
//     with the key waits here until this one commits or rolls back;
//  4. reserve the stock and charge the card, both with the key, so the
//     services act once per key however often this step runs;
//  5. insert the order (paid) and its order_paid and order_confirmed
//     outbox events, and COMMIT them with the key;
//  6. deliver order_paid to the warehouse at once (bounded by
//     FulfilTimeout): accepted, the order is fulfilled and the answer says
//     so, as legacy's does; otherwise the answer says paid and the relay
//     delivers it later;
//  7. store the answer under the key; requests that waited answer it.
//
// A crash before 5 rolls the claim back: the client's retry with the key
// runs again, and the payment service replays the charge it already made,
// so the order commits with that one payment. A crash after 5 leaves a
// committed order and outbox: the relay fulfils it, and a retry waits for
// the answer, or after respondWithin answers from the order's state.
func (s *Server) placeOrder(ctx context.Context, p placement) (answer, error) {
	if p.key != "" {
		if a, ok, err := s.answerFromKey(ctx, p, false); ok {
			return a, err
		}
	}

	user, err := s.store.GetUser(ctx, p.req.UserID)
	if errors.Is(err, ErrNotFound) {
		return errorAnswer(http.StatusNotFound, "user not found"), nil
	}
	if err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), err
	}
	item, err := s.downstream.inventory(ctx, p.req.ItemID)
	if hasStatus(err, http.StatusNotFound) {
		return errorAnswer(http.StatusNotFound, "item not found"), nil
	}
	if err != nil {
		return errorAnswer(http.StatusBadGateway, "inventory unavailable"), err
	}
	if item.Available < p.req.Quantity {
		return outOfStockAnswer, nil
	}

	var claim *KeyClaim
	if p.key != "" && !p.dryRun {
		claim = &KeyClaim{Key: p.key, Fingerprint: p.fingerprint, RespondBy: s.clock().Add(s.respondWithin)}
	}
	tx, err := s.beginOrder(ctx, claim)
	if errors.Is(err, ErrKeyClaimed) {
		// Another request placed it while this one read the stock.
		a, _, err := s.answerFromKey(ctx, p, true)
		return a, err
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return errorAnswer(http.StatusConflict, "a request with this Idempotency-Key is still in progress"), nil
	}
	if err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), err
	}
	// The rollback must run even if the client has gone.
	defer tx.Rollback(context.WithoutCancel(ctx))

	total := item.PriceCents * int64(p.req.Quantity)
	paymentID := DryRunPaymentID
	if !p.dryRun {
		err := s.downstream.reserve(ctx, p.req.ItemID, p.req.Quantity, p.key)
		if hasStatus(err, http.StatusConflict) {
			return outOfStockAnswer, nil
		}
		if err != nil {
			return errorAnswer(http.StatusBadGateway, "inventory unavailable"), err
		}
		pay, err := s.downstream.charge(ctx, p.req.UserID, total, p.key)
		if err != nil {
			// As in legacy, the reservation is not released: the fake
			// inventory has no release, and a retry with the key reuses it.
			return errorAnswer(http.StatusBadGateway, "payment failed"), err
		}
		paymentID = pay.PaymentID
		// Charged: from here on the order must commit whether or not the
		// client waits for the answer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.respondWithin)
		defer cancel()
	}

	now := s.now()
	order, err := tx.CreateOrder(ctx, Order{
		UserID:         p.req.UserID,
		ItemID:         p.req.ItemID,
		Quantity:       p.req.Quantity,
		UnitPriceCents: item.PriceCents,
		TotalCents:     total,
		Status:         StatusPaid,
		PaymentID:      paymentID,
		CreatedAt:      now,
		UpdatedAt:      now,
	})
	if err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), fmt.Errorf("commit after payment %s: %w", paymentID, err)
	}
	paid, confirmed := s.orderEvents(order, user, now, p.traceParent)
	if err := tx.AddEvents(ctx, paid, confirmed); err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), fmt.Errorf("commit after payment %s: %w", paymentID, err)
	}

	if p.dryRun {
		// Nothing may be sent, so the warehouse's answer is predicted:
		// the healthy path, where it accepts the shipment.
		order.Status, order.UpdatedAt = StatusFulfilled, s.now()
		if err := tx.Rollback(ctx); err != nil {
			return errorAnswer(http.StatusInternalServerError, "internal error"), err
		}
		body := orderJSONBody(order)
		return answer{status: http.StatusCreated, body: body, outcome: outcomeDryRun}, nil
	}

	if err := tx.Commit(ctx); err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), fmt.Errorf("commit after payment %s: %w", paymentID, err)
	}
	s.notify()

	deliverCtx, span := s.startDelivery(ctx, paid)
	delivered := s.deliver(deliverCtx, paid, paid.ClaimedBy, s.fulfilTimeout)
	span.End()
	if delivered {
		if fresh, err := s.store.GetOrder(ctx, order.ID); err == nil {
			order = fresh
		}
	}
	body := orderJSONBody(order)
	resp := StoredResponse{Status: http.StatusCreated, Body: body}
	if claim != nil {
		stored, err := s.store.CompleteIdempotencyKey(ctx, p.key, resp)
		if err != nil {
			// The order is committed; a retry answers from its state
			// after respondWithin.
			s.logger.ErrorContext(ctx, "answer not stored for idempotency key", "request_id", requestIDFrom(ctx), "order_id", order.ID, "error", err)
		} else {
			resp = stored
		}
	}
	return answer{status: resp.Status, body: resp.Body, outcome: outcomeCreated}, nil
}

// beginOrder opens the order's transaction; claiming a key may wait for
// another request holding it, at most IdempotencyWait.
func (s *Server) beginOrder(ctx context.Context, claim *KeyClaim) (OrderTx, error) {
	if claim == nil {
		return s.store.BeginOrder(ctx, nil)
	}
	waitCtx, cancel := context.WithTimeout(ctx, s.idempotencyWait)
	defer cancel()
	tx, err := s.store.BeginOrder(waitCtx, claim)
	if err != nil && waitCtx.Err() != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("claim idempotency key: %w", context.DeadlineExceeded)
	}
	return tx, err
}

// orderEvents builds a new order's outbox events. order_paid is leased to
// the request itself for its immediate delivery, so that a relay does not
// send it at the same moment; if the request dies, the lease ends and a
// relay delivers it.
func (s *Server) orderEvents(o Order, u User, now time.Time, traceParent string) (paid, confirmed Event) {
	shipment, _ := json.Marshal(struct {
		OrderID  string `json:"order_id"`
		UserID   int64  `json:"user_id"`
		ItemID   string `json:"item_id"`
		Quantity int    `json:"quantity"`
	}{o.ID, o.UserID, o.ItemID, o.Quantity})
	mail, _ := json.Marshal(struct {
		To       string `json:"to"`
		Template string `json:"template"`
		OrderID  string `json:"order_id"`
	}{u.Email, "order_confirmation", o.ID})
	lease := now.Add(s.fulfilTimeout + 10*time.Second)
	paid = Event{
		ID: newEventID(), Kind: EventOrderPaid, OrderID: o.ID, Payload: shipment, TraceParent: traceParent,
		Attempts: 1, CreatedAt: now, AvailableAt: lease, ClaimedBy: "request-" + randomHex(6), ClaimedUntil: lease,
	}
	confirmed = Event{
		ID: newEventID(), Kind: EventOrderConfirmed, OrderID: o.ID, Payload: mail, TraceParent: traceParent,
		CreatedAt: now, AvailableAt: now,
	}
	return paid, confirmed
}

// answerFromKey answers a request whose key is already committed: the
// stored answer for the same request, 422 for a different one. While the
// request holding the key has not answered, it waits (polling with
// backoff) up to IdempotencyWait, then 409; once the holder's respondWithin
// has passed, it answers from the order's state itself and stores that.
// A dry run never waits nor stores. ok is false when the key is not
// committed: the caller places the order.
func (s *Server) answerFromKey(ctx context.Context, p placement, mustExist bool) (a answer, ok bool, err error) {
	deadline := time.Now().Add(s.idempotencyWait)
	pause := 2 * time.Millisecond
	for {
		rec, err := s.store.IdempotencyKey(ctx, p.key)
		if errors.Is(err, ErrNotFound) && !mustExist {
			return answer{}, false, nil
		}
		if err != nil {
			return errorAnswer(http.StatusInternalServerError, "internal error"), true, err
		}
		if rec.Fingerprint != p.fingerprint {
			return errorAnswer(http.StatusUnprocessableEntity, ErrIdempotencyMismatch.Error()), true, nil
		}
		if rec.Response != nil {
			return answer{status: rec.Response.Status, body: rec.Response.Body, outcome: outcomeReplayed, replayed: true}, true, nil
		}
		if p.dryRun {
			return answer{}, false, nil
		}
		if s.clock().After(rec.RespondBy) {
			order, err := s.store.GetOrder(ctx, rec.OrderID)
			if err != nil {
				return errorAnswer(http.StatusInternalServerError, "internal error"), true, err
			}
			body := orderJSONBody(order)
			stored, err := s.store.CompleteIdempotencyKey(ctx, p.key, StoredResponse{Status: http.StatusCreated, Body: body})
			if err != nil {
				return errorAnswer(http.StatusInternalServerError, "internal error"), true, err
			}
			return answer{status: stored.Status, body: stored.Body, outcome: outcomeReplayed, replayed: true}, true, nil
		}
		if time.Now().After(deadline) {
			return errorAnswer(http.StatusConflict, "a request with this Idempotency-Key is still in progress"), true, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return errorAnswer(http.StatusServiceUnavailable, "request cancelled"), true, context.Cause(ctx)
		case <-t.C:
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// newEventID returns a random UUID (version 4), the X-Event-Id.
func newEventID() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
