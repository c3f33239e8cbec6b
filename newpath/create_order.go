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
	msgTimedOut    = "request timed out"
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
		deadline:    requestDeadline(r.Context(), s.requestTimeout),
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
	// deadline is when the request's time (RequestTimeout) is up.
	deadline time.Time
}

// requestDeadline is ctx's deadline, which ServeHTTP sets; a bare call
// gets a fresh request timeout.
func requestDeadline(ctx context.Context, timeout time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(timeout)
}

// placeOrder is newpath's process_order. No step holds a transaction or a
// pooled connection across a downstream call, so a slow payment service
// slows the orders that wait on it and nothing else. With an idempotency
// key, the steps are ordered so that a crash anywhere charges at most once
// per key, loses no charge and writes at most one order:
//
//  1. claim the key in one committed statement, leased until the request's
//     end (ClaimIdempotencyKey). A key already answered is replayed (or 422
//     for another request); a key a live request holds is waited for,
//     polling, until its answer; a lease that ended with no order written is
//     taken over;
//  2. read the user and the item's stock and price;
//  3. reserve the stock and charge the card, both with the key, so the
//     services act once per key however often this step runs;
//  4. in one short transaction, only while this request still holds the
//     claim: insert the order (paid), its order_paid and order_confirmed
//     outbox events, and the order's id under the key;
//  5. deliver order_paid to the warehouse at once, bounded by
//     FulfilTimeout and the request's time left: accepted, the order is
//     fulfilled and the answer says so, as legacy's does; otherwise the
//     answer says paid and the relay delivers it later;
//  6. store the answer under the key; requests that waited answer it.
//
// A failure before 4 (an unknown user or item, no stock, a failed
// payment, the client gone) releases the claim, so that the client's retry
// runs again; a crash there leaves the claim until its lease ends, and the
// retry then takes it over. Either way the payment service replays the
// charge it already made, so the order is written with that one payment.
// A claim lost to a takeover by then writes nothing at 4 and answers as a
// waiting request does. A crash after 4 leaves a committed order and
// outbox: the relay fulfils it, and a retry waits for the answer, or after
// respond_by answers from the order's state.
//
// Steps 1 to 3 end before the last afterCharge of the request timeout:
// once charged, the order is always written (on a context of its own,
// detached from the client) and answered.
func (s *Server) placeOrder(ctx context.Context, p placement) (answer, error) {
	pre, cancel := context.WithDeadline(ctx, p.deadline.Add(-s.afterCharge))
	defer cancel()

	var claim *KeyClaim
	if p.key != "" {
		c, a, answered, err := s.claimKey(pre, p)
		if answered {
			return a, err
		}
		claim = c
	}
	// settled is set once the key needs no release: an order is written
	// under it, or another request took it over.
	settled := false
	if claim != nil {
		defer func() {
			if !settled {
				s.releaseKey(ctx, claim)
			}
		}()
	}

	user, err := s.store.GetUser(pre, p.req.UserID)
	if errors.Is(err, ErrNotFound) {
		return errorAnswer(http.StatusNotFound, "user not found"), nil
	}
	if err != nil {
		return storeFailure(pre), err
	}
	item, err := s.downstream.inventory(pre, p.req.ItemID)
	if hasStatus(err, http.StatusNotFound) {
		return errorAnswer(http.StatusNotFound, "item not found"), nil
	}
	if err != nil {
		return errorAnswer(http.StatusBadGateway, "inventory unavailable"), err
	}
	// With a key, the keyed reservation decides: a retry after a crash
	// must not read its own earlier reservation as missing stock and
	// leave the charge it already made without an order.
	if item.Available < p.req.Quantity && (p.key == "" || p.dryRun) {
		return outOfStockAnswer, nil
	}

	total := item.PriceCents * int64(p.req.Quantity)
	paymentID := DryRunPaymentID
	if !p.dryRun {
		err := s.downstream.reserve(pre, p.req.ItemID, p.req.Quantity, p.key)
		if hasStatus(err, http.StatusConflict) {
			return outOfStockAnswer, nil
		}
		if err != nil {
			return errorAnswer(http.StatusBadGateway, "inventory unavailable"), err
		}
		pay, err := s.downstream.charge(pre, p.req.UserID, total, p.key)
		if err != nil {
			// As in legacy, the reservation is not released: the fake
			// inventory has no release, and a retry with the key reuses it.
			return errorAnswer(http.StatusBadGateway, "payment failed"), err
		}
		paymentID = pay.PaymentID
	}

	// Charged: from here on the order is written and answered whether or
	// not the client waits, by the request's deadline: every step below
	// shares the afterCharge left, so the answer never comes later than
	// RequestTimeout, and so never after the proxy gave up on it.
	finish, cancelFinish := context.WithDeadline(context.WithoutCancel(ctx), p.deadline)
	defer cancelFinish()
	now := s.now()
	deliverBy := earliest(time.Now().Add(s.fulfilTimeout), p.deadline.Add(-s.afterCharge/2))
	order, paid, err := s.writeOrder(finish, Order{
		UserID:         p.req.UserID,
		ItemID:         p.req.ItemID,
		Quantity:       p.req.Quantity,
		UnitPriceCents: item.PriceCents,
		TotalCents:     total,
		Status:         StatusPaid,
		PaymentID:      paymentID,
		CreatedAt:      now,
		UpdatedAt:      now,
	}, user, claim, p.traceParent, deliverBy, !p.dryRun)
	if errors.Is(err, ErrClaimLost) {
		settled = true
		// Another request took the key over after this one's lease ended;
		// the payment service gave both the same charge, and the order is
		// the other's to write.
		s.logger.WarnContext(ctx, "idempotency key taken over before the order was written", "request_id", requestIDFrom(ctx),
			"idempotency_key", p.key, "payment_id", paymentID)
		wait, cancel := context.WithDeadline(finish, p.deadline)
		defer cancel()
		a, _, err := s.awaitKey(wait, p, nil)
		return a, err
	}
	if err != nil {
		return errorAnswer(http.StatusInternalServerError, "internal error"), fmt.Errorf("order after payment %s: %w", paymentID, err)
	}
	settled = true

	if p.dryRun {
		// Nothing may be sent, so the warehouse's answer is predicted:
		// the healthy path, where it accepts the shipment.
		order.Status, order.UpdatedAt = StatusFulfilled, s.now()
		return answer{status: http.StatusCreated, body: orderJSONBody(order), outcome: outcomeDryRun}, nil
	}
	s.notify()

	if wait := time.Until(deliverBy); wait > 0 {
		deliverCtx, span := s.startDelivery(finish, paid)
		delivered := s.deliver(deliverCtx, paid, paid.ClaimedBy, wait)
		span.End()
		if delivered {
			if fresh, err := s.store.GetOrder(finish, order.ID); err == nil {
				order = fresh
			}
		}
	} else {
		s.handBack(finish, paid)
	}
	body := orderJSONBody(order)
	resp := StoredResponse{Status: http.StatusCreated, Body: body}
	if claim != nil {
		stored, err := s.store.CompleteIdempotencyKey(finish, p.key, resp, s.clock())
		if err != nil {
			// The order is committed; a retry answers from its state
			// after respond_by.
			s.logger.ErrorContext(ctx, "answer not stored for idempotency key", "request_id", requestIDFrom(ctx), "order_id", order.ID, "error", err)
		} else {
			resp = stored
		}
	}
	return answer{status: resp.Status, body: resp.Body, outcome: outcomeCreated}, nil
}

// writeOrder writes o, its outbox events and, under claim, the order's id
// under the key, in one short transaction bounded by ctx, and commits it
// unless commit is false (a dry run). The transaction is opened only now,
// after every downstream call.
func (s *Server) writeOrder(ctx context.Context, o Order, user User, claim *KeyClaim, traceParent string, deliverBy time.Time, commit bool) (Order, Event, error) {
	tx, err := s.store.BeginOrder(ctx, claim)
	if err != nil {
		return Order{}, Event{}, err
	}
	// The rollback must run even if the budget is spent.
	defer tx.Rollback(context.WithoutCancel(ctx))
	order, err := tx.CreateOrder(ctx, o)
	if err != nil {
		return Order{}, Event{}, err
	}
	paid, confirmed := s.orderEvents(order, user, s.now(), traceParent, deliverBy)
	if err := tx.AddEvents(ctx, paid, confirmed); err != nil {
		return Order{}, Event{}, err
	}
	if !commit {
		return order, paid, tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return Order{}, Event{}, err
	}
	return order, paid, nil
}

// claimKey claims p's key for this request (answered false), or answers
// from the key (answered true). A dry run never claims nor waits: it
// replays an answer stored under the key (or 422), and otherwise runs
// unclaimed.
func (s *Server) claimKey(ctx context.Context, p placement) (claim *KeyClaim, a answer, answered bool, err error) {
	if p.dryRun {
		rec, err := s.store.IdempotencyKey(ctx, p.key)
		if errors.Is(err, ErrNotFound) {
			return nil, answer{}, false, nil
		}
		if err != nil {
			return nil, storeFailure(ctx), true, err
		}
		a, ok, err := s.answerFromRecord(ctx, p, rec)
		return nil, a, ok, err
	}
	claim = &KeyClaim{Key: p.key, Fingerprint: p.fingerprint, Owner: "request-" + randomHex(8)}
	a, claimed, err := s.awaitKey(ctx, p, claim)
	if claimed {
		return claim, answer{}, false, nil
	}
	return nil, a, true, err
}

// awaitKey claims p's key for claim (claimed true), or answers from the
// key: the stored answer for the same request, 422 for a different one.
// While another request holds the key and has not answered, it waits
// (polling with backoff, holding no connection in between) up to
// IdempotencyWait and ctx's deadline, then answers 409; a claim whose
// lease ends meanwhile with no order is taken over; once the holder's
// respond_by has passed after it wrote its order, it answers from the
// order's state itself and stores that. With a nil claim it only waits
// for the answer.
func (s *Server) awaitKey(ctx context.Context, p placement, claim *KeyClaim) (a answer, claimed bool, err error) {
	until := time.Now().Add(s.idempotencyWait)
	if d, ok := ctx.Deadline(); ok && d.Before(until) {
		until = d
	}
	inProgress := errorAnswer(http.StatusConflict, "a request with this Idempotency-Key is still in progress")
	pause := 2 * time.Millisecond
	// held: another request held the key at the last poll, so running out
	// of time is "still in progress" (409), not a slow store (504).
	held := false
	for {
		var rec IdempotencyRecord
		if claim != nil {
			now := s.clock()
			// The lease lasts as long as the request may still run.
			claim.ClaimedUntil = now.Add(time.Until(p.deadline) + s.afterCharge)
			claim.RespondBy = claim.ClaimedUntil
			rec, claimed, err = s.store.ClaimIdempotencyKey(ctx, *claim, now)
			if err == nil && claimed {
				return answer{}, true, nil
			}
		} else {
			rec, err = s.store.IdempotencyKey(ctx, p.key)
		}
		switch {
		case errors.Is(err, ErrNotFound):
			// Released since: the next round claims it (or, only waiting,
			// waits for whoever does).
		case err != nil && held && ctx.Err() == context.DeadlineExceeded:
			return inProgress, false, nil
		case err != nil:
			return storeFailure(ctx), false, err
		default:
			if a, ok, err := s.answerFromRecord(ctx, p, rec); ok {
				return a, false, err
			}
			held = true
		}
		if !time.Now().Before(until) {
			return inProgress, false, nil
		}
		t := time.NewTimer(min(pause, time.Until(until)))
		select {
		case <-ctx.Done():
			t.Stop()
			if ctx.Err() == context.DeadlineExceeded {
				return inProgress, false, nil
			}
			return errorAnswer(http.StatusServiceUnavailable, "request cancelled"), false, context.Cause(ctx)
		case <-t.C:
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// answerFromRecord answers from a key's record, if it can: 422 for
// another request, the stored answer, or, once respond_by has passed with
// an order written and no answer stored (its request died after its
// commit), the order's state, stored as the answer. A dry run never
// stores. ok is false when there is no answer yet.
func (s *Server) answerFromRecord(ctx context.Context, p placement, rec IdempotencyRecord) (a answer, ok bool, err error) {
	if rec.Fingerprint != p.fingerprint {
		return errorAnswer(http.StatusUnprocessableEntity, ErrIdempotencyMismatch.Error()), true, nil
	}
	if rec.Response != nil {
		return answer{status: rec.Response.Status, body: rec.Response.Body, outcome: outcomeReplayed, replayed: true}, true, nil
	}
	if p.dryRun || rec.OrderID == "" || !s.clock().After(rec.RespondBy) {
		return answer{}, false, nil
	}
	order, err := s.store.GetOrder(ctx, rec.OrderID)
	if err != nil {
		return storeFailure(ctx), true, err
	}
	stored, err := s.store.CompleteIdempotencyKey(ctx, p.key, StoredResponse{Status: http.StatusCreated, Body: orderJSONBody(order)}, s.clock())
	if err != nil {
		return storeFailure(ctx), true, err
	}
	return answer{status: stored.Status, body: stored.Body, outcome: outcomeReplayed, replayed: true}, true, nil
}

// releaseKey gives up claim after a failure before its order was written,
// so that a retry runs again at once; if that fails too, the lease ends
// and the retry takes the key over then.
func (s *Server) releaseKey(ctx context.Context, claim *KeyClaim) {
	// The release must run even if the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.afterCharge)
	defer cancel()
	if err := s.store.ReleaseIdempotencyKey(ctx, claim.Key, claim.Owner); err != nil {
		s.logger.WarnContext(ctx, "idempotency key not released; a retry takes it over when its lease ends", "request_id", requestIDFrom(ctx),
			"idempotency_key", claim.Key, "claimed_until", claim.ClaimedUntil, "error", err)
	}
}

// handBack ends the request's lease of its order_paid event when no time
// is left to deliver it, so that a relay delivers it now rather than when
// the lease ends.
func (s *Server) handBack(ctx context.Context, paid Event) {
	if err := s.store.MarkFailed(ctx, paid.ID, paid.ClaimedBy, s.clock(), "not delivered within the request timeout; left to the relay", false); err != nil {
		s.logger.WarnContext(ctx, "order_paid event not handed back; a relay delivers it when its lease ends", "event_id", paid.ID, "error", err)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// storeFailure answers a failed store call: 504 when the request's time
// ran out (for a safe method the proxy then falls back to legacy), else
// the contract's 500.
func storeFailure(ctx context.Context) answer {
	if ctx.Err() == context.DeadlineExceeded {
		return errorAnswer(http.StatusGatewayTimeout, msgTimedOut)
	}
	return errorAnswer(http.StatusInternalServerError, "internal error")
}

// orderEvents builds a new order's outbox events. order_paid is leased to
// the request itself for its immediate delivery until deliverBy, so that a
// relay does not send it at the same moment; if the request dies, the
// lease ends and a relay delivers it.
func (s *Server) orderEvents(o Order, u User, now time.Time, traceParent string, deliverBy time.Time) (paid, confirmed Event) {
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
	lease := now.Add(max(0, time.Until(deliverBy)) + 10*time.Second)
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

// newEventID returns a random UUID (version 4), the X-Event-Id.
func newEventID() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
