package legacy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// MaxQuantity is the largest quantity one order may ask for.
const MaxQuantity = 100

// createOrderRequest is a validated POST /orders body.
type createOrderRequest struct {
	UserID   int64
	ItemID   string
	Quantity int
}

// Validation messages of POST /orders, part of the contract.
const (
	msgInvalidJSON = "invalid JSON body"
	msgUserID      = "user_id must be a positive integer"
	msgItemID      = "item_id must be a non-empty string"
	msgQuantity    = "quantity must be an integer between 1 and 100"
)

// parseCreateOrder validates a POST /orders body and returns the request or
// the message of the first problem, checked in the order user_id, item_id,
// quantity. Keys are matched exactly (encoding/json would also accept
// "USER_ID"), unknown keys are ignored, and a missing field, a null, a wrong
// type and an out-of-range value all get the same message.
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

// errOutOfStock ends the chain with the legacy out-of-stock answer.
var errOutOfStock = errors.New("out of stock")

// apiError is a chain failure with the status and message the client gets.
type apiError struct {
	status  int
	message string
	err     error
}

func (e *apiError) Error() string { return e.message + ": " + e.err.Error() }

func (e *apiError) Unwrap() error { return e.err }

// processOrder is the legacy process_order: one synchronous chain, no
// retries, nothing undone on failure. Its order of steps and what each
// failure leaves behind are documented in docs/order-api.md; the rebuilt
// service's tests are written against exactly these leftovers.
func (s *Server) processOrder(ctx context.Context, req createOrderRequest) (Order, error) {
	user, err := s.store.GetUser(ctx, req.UserID)
	if errors.Is(err, ErrNotFound) {
		return Order{}, &apiError{http.StatusNotFound, "user not found", err}
	}
	if err != nil {
		return Order{}, fmt.Errorf("process order: %w", err)
	}

	item, err := s.downstream.inventory(ctx, req.ItemID)
	if hasStatus(err, http.StatusNotFound) {
		return Order{}, &apiError{http.StatusNotFound, "item not found", err}
	}
	if err != nil {
		return Order{}, &apiError{http.StatusBadGateway, "inventory unavailable", err}
	}
	if item.Available < req.Quantity {
		return Order{}, errOutOfStock
	}
	// Check-then-reserve: another order may take the stock in between, and
	// the reservation's 409 is the same out-of-stock answer.
	err = s.downstream.reserve(ctx, req.ItemID, req.Quantity)
	if hasStatus(err, http.StatusConflict) {
		return Order{}, errOutOfStock
	}
	if err != nil {
		return Order{}, &apiError{http.StatusBadGateway, "inventory unavailable", err}
	}

	total := item.PriceCents * int64(req.Quantity)
	payment, err := s.downstream.charge(ctx, req.UserID, total)
	if err != nil {
		// The reservation is not released: stock leaks, as it always did.
		return Order{}, &apiError{http.StatusBadGateway, "payment failed", err}
	}

	now := s.now()
	order, err := s.store.CreateOrder(ctx, Order{
		UserID:         req.UserID,
		ItemID:         req.ItemID,
		Quantity:       req.Quantity,
		UnitPriceCents: item.PriceCents,
		TotalCents:     total,
		Status:         StatusPaid,
		PaymentID:      payment.PaymentID,
		CreatedAt:      now,
		UpdatedAt:      now,
	})
	if err != nil {
		// The card is charged and there is no order: the flaw finance knows.
		return Order{}, fmt.Errorf("process order: commit after payment %s: %w", payment.PaymentID, err)
	}

	if err := s.downstream.ship(ctx, order); err != nil {
		// The flaw under study: no retry, no outbox. The order stays paid
		// and is never fulfilled, and the client is told 201 regardless.
		s.logger.ErrorContext(ctx, "warehouse call failed; order left paid and will never be fulfilled",
			"request_id", requestIDFrom(ctx), "order_id", order.ID, "error", err)
	} else if fulfilled, err := s.store.TransitionOrder(ctx, order.ID, StatusPaid, StatusFulfilled, s.now()); err != nil {
		s.logger.ErrorContext(ctx, "shipment accepted but order not marked fulfilled",
			"request_id", requestIDFrom(ctx), "order_id", order.ID, "error", err)
	} else {
		order = fulfilled
	}

	// The confirmation goes out even when the warehouse refused the order.
	if err := s.downstream.sendConfirmation(ctx, user, order); err != nil {
		s.logger.WarnContext(ctx, "confirmation mail not sent",
			"request_id", requestIDFrom(ctx), "order_id", order.ID, "error", err)
	}
	return order, nil
}
