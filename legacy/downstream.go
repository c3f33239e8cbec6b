package legacy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// Headers the fake services understand.
const (
	// IdempotencyKeyHeader makes a payment or a stock reservation safe to
	// retry: the same key answers the stored response without acting twice.
	// Legacy never sends it; the rebuilt service does.
	IdempotencyKeyHeader = "Idempotency-Key"
	// EventIDHeader identifies a warehouse or mail delivery; a repeated id is
	// answered 200 and not delivered again, which makes at-least-once
	// delivery from an outbox safe.
	EventIDHeader = "X-Event-Id"
	// replayedHeader marks a response replayed for an idempotency key.
	replayedHeader = "Idempotent-Replayed"
)

// DownstreamOptions configures NewDownstream. The zero value is usable.
type DownstreamOptions struct {
	// Catalogue is the inventory at start; nil means DefaultCatalogue().
	Catalogue []Item
	// Faults is the failure injection at start; the zero value injects none.
	Faults Faults
	// Logger receives injected failures at debug level; nil discards.
	Logger *slog.Logger
	// Random returns a number in [0, 1) to decide injected errors; nil uses
	// math/rand/v2. Tests inject a fixed sequence.
	Random func() float64
}

// DownstreamStats counts what the fake services did. Replays and
// duplicates are counted apart from the real effects, so that a test can
// tell "charged once, answered twice" from "charged twice".
type DownstreamStats struct {
	// InventoryChecks counts successful GET /inventory/{item_id}.
	InventoryChecks int `json:"inventory_checks"`
	// Reservations counts stock decrements.
	Reservations int `json:"reservations"`
	// Charges counts payments created, i.e. cards charged.
	Charges int `json:"charges"`
	// IdempotentReplays counts payments and reservations answered from an
	// Idempotency-Key without acting again.
	IdempotentReplays int `json:"idempotent_replays"`
	// Shipments counts shipments the warehouse accepted.
	Shipments int `json:"shipments"`
	// Mails counts mails sent.
	Mails int `json:"mails"`
	// DuplicateEvents counts warehouse and mail calls dropped because their
	// X-Event-Id was already delivered.
	DuplicateEvents int `json:"duplicate_events"`
	// InjectedFailures counts calls answered 503 (down) or 500 (error rate).
	InjectedFailures int `json:"injected_failures"`
}

// storedResponse is a response kept for an idempotency key or event id.
type storedResponse struct {
	// fingerprint is the canonical request the key was first used with.
	fingerprint string
	status      int
	body        []byte
}

// Downstream is the fake inventory, payment, warehouse and mail services in
// one http.Handler, with failure injection and counters for tests. It is
// safe for concurrent use.
type Downstream struct {
	logger *slog.Logger
	random func() float64
	faults atomic.Pointer[Faults]
	mux    *http.ServeMux

	mu    sync.Mutex
	stock map[string]Item
	// reservationKeys and paymentKeys hold responses by Idempotency-Key.
	reservationKeys map[string]storedResponse
	paymentKeys     map[string]storedResponse
	chargesByUser   map[int64]int
	nextPayment     int64
	// shipmentEvents and mailEvents hold responses by X-Event-Id.
	shipmentEvents   map[string]storedResponse
	mailEvents       map[string]storedResponse
	shipmentsByOrder map[string]int
	mailsByOrder     map[string]int
	nextShipment     int64
	nextMail         int64
	stats            DownstreamStats
}

var _ http.Handler = (*Downstream)(nil)

// NewDownstream returns the fake services. It fails when the faults are out
// of range or the catalogue repeats an item.
func NewDownstream(opts DownstreamOptions) (*Downstream, error) {
	if err := opts.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("new downstream: faults: %w", err)
	}
	catalogue := opts.Catalogue
	if catalogue == nil {
		catalogue = DefaultCatalogue()
	}
	d := &Downstream{
		logger:           opts.Logger,
		random:           opts.Random,
		stock:            make(map[string]Item, len(catalogue)),
		reservationKeys:  make(map[string]storedResponse),
		paymentKeys:      make(map[string]storedResponse),
		chargesByUser:    make(map[int64]int),
		nextPayment:      FirstPaymentNumber,
		shipmentEvents:   make(map[string]storedResponse),
		mailEvents:       make(map[string]storedResponse),
		shipmentsByOrder: make(map[string]int),
		mailsByOrder:     make(map[string]int),
		nextShipment:     1,
		nextMail:         1,
	}
	if d.logger == nil {
		d.logger = slog.New(slog.DiscardHandler)
	}
	if d.random == nil {
		d.random = rand.Float64
	}
	for _, it := range catalogue {
		if _, ok := d.stock[it.ID]; ok {
			return nil, fmt.Errorf("new downstream: catalogue item %q: %w", it.ID, ErrDuplicate)
		}
		d.stock[it.ID] = it
	}
	faults := opts.Faults
	d.faults.Store(&faults)
	d.mux = d.routes()
	return d, nil
}

func (d *Downstream) routes() *http.ServeMux {
	mux := http.NewServeMux()
	inventory := func(f *Faults) ServiceFaults { return f.Inventory }
	payments := func(f *Faults) ServiceFaults { return f.Payments }
	warehouse := func(f *Faults) ServiceFaults { return f.Warehouse }
	mail := func(f *Faults) ServiceFaults { return f.Mail }

	mux.Handle("GET /inventory/{item_id}", d.withFaults("inventory", inventory, d.handleGetInventory))
	mux.Handle("/inventory/{item_id}", methodNotAllowed("GET", "HEAD"))
	mux.Handle("POST /inventory/{item_id}/reserve", d.withFaults("inventory", inventory, d.handleReserve))
	mux.Handle("/inventory/{item_id}/reserve", methodNotAllowed("POST"))
	mux.Handle("POST /payments", d.withFaults("payments", payments, d.handleCharge))
	mux.Handle("/payments", methodNotAllowed("POST"))
	mux.Handle("POST /warehouse/shipments", d.withFaults("warehouse", warehouse, d.handleShipment))
	mux.Handle("/warehouse/shipments", methodNotAllowed("POST"))
	mux.Handle("POST /mail/send", d.withFaults("mail", mail, d.handleMail))
	mux.Handle("/mail/send", methodNotAllowed("POST"))
	mux.HandleFunc("GET /_control", d.handleGetControl)
	mux.HandleFunc("PUT /_control", d.handlePutControl)
	mux.Handle("/_control", methodNotAllowed("GET", "HEAD", "PUT"))
	mux.HandleFunc("GET /_stats", d.handleStats)
	mux.Handle("/_stats", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.Handle("/healthz", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("/", notFound)
	return mux
}

// ServeHTTP implements http.Handler.
func (d *Downstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mux.ServeHTTP(w, r)
}

// withFaults injects the service's current faults before next runs: down
// first (refused at once, like a closed port behind a load balancer), then
// latency, then the error draw.
func (d *Downstream) withFaults(service string, of func(*Faults) ServiceFaults, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read once per call: a PUT /_control mid-call does not change it.
		f := of(d.faults.Load())
		if f.Down {
			d.countInjectedFailure()
			d.logger.DebugContext(r.Context(), "injected outage", "service", service, "path", r.URL.Path)
			writeError(w, http.StatusServiceUnavailable, service+" unavailable")
			return
		}
		if err := sleepContext(r.Context(), f.Latency); err != nil {
			// The caller gave up during the simulated delay: nobody reads an answer.
			return
		}
		if f.ErrorRate > 0 && d.random() < f.ErrorRate {
			d.countInjectedFailure()
			d.logger.DebugContext(r.Context(), "injected error", "service", service, "path", r.URL.Path)
			writeError(w, http.StatusInternalServerError, "injected failure")
			return
		}
		next(w, r)
	})
}

func (d *Downstream) countInjectedFailure() {
	d.mu.Lock()
	d.stats.InjectedFailures++
	d.mu.Unlock()
}

// inventoryResponse is the answer of GET /inventory/{item_id}.
type inventoryResponse struct {
	ItemID     string `json:"item_id"`
	Available  int    `json:"available"`
	PriceCents int64  `json:"price_cents"`
}

func (d *Downstream) handleGetInventory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("item_id")
	d.mu.Lock()
	it, ok := d.stock[id]
	if ok {
		d.stats.InventoryChecks++
	}
	d.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "item not found")
		return
	}
	writeJSON(w, http.StatusOK, inventoryResponse{ItemID: it.ID, Available: it.Available, PriceCents: it.PriceCents})
}

// reserveRequest is the body of POST /inventory/{item_id}/reserve.
type reserveRequest struct {
	Quantity int `json:"quantity"`
}

// reserveResponse answers a successful reservation.
type reserveResponse struct {
	ItemID    string `json:"item_id"`
	Reserved  int    `json:"reserved"`
	Available int    `json:"available"`
}

func (d *Downstream) handleReserve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("item_id")
	var req reserveRequest
	if !decodeServiceRequest(w, r, &req) {
		return
	}
	if req.Quantity < 1 {
		writeError(w, http.StatusBadRequest, "quantity must be a positive integer")
		return
	}
	key := r.Header.Get(IdempotencyKeyHeader)
	fingerprint := id + "\x00" + strconv.Itoa(req.Quantity)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.answeredForKeyLocked(w, d.reservationKeys, key, fingerprint) {
		return
	}
	it, ok := d.stock[id]
	if !ok {
		writeError(w, http.StatusNotFound, "item not found")
		return
	}
	if it.Available < req.Quantity {
		// Not stored under the key: a retry after a restock may succeed.
		writeError(w, http.StatusConflict, "insufficient stock")
		return
	}
	it.Available -= req.Quantity
	d.stock[id] = it
	d.stats.Reservations++
	body, _ := json.Marshal(reserveResponse{ItemID: id, Reserved: req.Quantity, Available: it.Available})
	d.storeLocked(d.reservationKeys, key, storedResponse{fingerprint: fingerprint, status: http.StatusOK, body: body})
	writeRawJSON(w, http.StatusOK, body)
}

// paymentRequest is the body of POST /payments.
type paymentRequest struct {
	OrderID     string `json:"order_id,omitempty"`
	UserID      int64  `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
}

// paymentResponse answers a charge.
type paymentResponse struct {
	PaymentID   string `json:"payment_id"`
	OrderID     string `json:"order_id,omitempty"`
	UserID      int64  `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
}

func (d *Downstream) handleCharge(w http.ResponseWriter, r *http.Request) {
	var req paymentRequest
	if !decodeServiceRequest(w, r, &req) {
		return
	}
	if req.UserID < 1 {
		writeError(w, http.StatusBadRequest, "user_id must be a positive integer")
		return
	}
	if req.AmountCents < 1 {
		writeError(w, http.StatusBadRequest, "amount_cents must be a positive integer")
		return
	}
	key := r.Header.Get(IdempotencyKeyHeader)
	canonical, _ := json.Marshal(req)
	fingerprint := string(canonical)

	// One lock across check-and-charge: two concurrent calls with one key
	// must charge once.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.answeredForKeyLocked(w, d.paymentKeys, key, fingerprint) {
		return
	}
	id := "pay_" + strconv.FormatInt(d.nextPayment, 10)
	d.nextPayment++
	d.chargesByUser[req.UserID]++
	d.stats.Charges++
	body, _ := json.Marshal(paymentResponse{PaymentID: id, OrderID: req.OrderID, UserID: req.UserID, AmountCents: req.AmountCents})
	d.storeLocked(d.paymentKeys, key, storedResponse{fingerprint: fingerprint, status: http.StatusCreated, body: body})
	writeRawJSON(w, http.StatusCreated, body)
}

// answeredForKeyLocked answers a request whose Idempotency-Key was seen
// before, and reports whether it did: the same request gets the stored
// response again (marked with Idempotent-Replayed), a different request under
// the same key gets 422, as payment providers do. A new or empty key is left
// to the caller.
func (d *Downstream) answeredForKeyLocked(w http.ResponseWriter, keys map[string]storedResponse, key, fingerprint string) bool {
	if key == "" {
		return false
	}
	stored, ok := keys[key]
	if !ok {
		return false
	}
	if stored.fingerprint != fingerprint {
		writeError(w, http.StatusUnprocessableEntity, "idempotency key reused with a different request")
		return true
	}
	d.stats.IdempotentReplays++
	w.Header().Set(replayedHeader, "true")
	writeRawJSON(w, stored.status, stored.body)
	return true
}

// storeLocked keeps resp under key; without a key there is nothing to keep.
func (d *Downstream) storeLocked(keys map[string]storedResponse, key string, resp storedResponse) {
	if key != "" {
		keys[key] = resp
	}
}

// shipmentRequest is the body of POST /warehouse/shipments.
type shipmentRequest struct {
	OrderID  string `json:"order_id"`
	UserID   int64  `json:"user_id"`
	ItemID   string `json:"item_id"`
	Quantity int    `json:"quantity"`
}

// shipmentResponse answers an accepted shipment.
type shipmentResponse struct {
	ShipmentID string `json:"shipment_id"`
	OrderID    string `json:"order_id"`
}

func (d *Downstream) handleShipment(w http.ResponseWriter, r *http.Request) {
	var req shipmentRequest
	if !decodeServiceRequest(w, r, &req) {
		return
	}
	if req.OrderID == "" {
		writeError(w, http.StatusBadRequest, "order_id is required")
		return
	}
	event := r.Header.Get(EventIDHeader)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.duplicateEventLocked(w, d.shipmentEvents, event) {
		return
	}
	id := "shp_" + strconv.FormatInt(d.nextShipment, 10)
	d.nextShipment++
	d.shipmentsByOrder[req.OrderID]++
	d.stats.Shipments++
	body, _ := json.Marshal(shipmentResponse{ShipmentID: id, OrderID: req.OrderID})
	d.storeLocked(d.shipmentEvents, event, storedResponse{status: http.StatusOK, body: body})
	writeRawJSON(w, http.StatusCreated, body)
}

// mailRequest is the body of POST /mail/send.
type mailRequest struct {
	To       string `json:"to"`
	Template string `json:"template"`
	OrderID  string `json:"order_id,omitempty"`
}

// mailResponse answers a sent mail.
type mailResponse struct {
	MessageID string `json:"message_id"`
}

func (d *Downstream) handleMail(w http.ResponseWriter, r *http.Request) {
	var req mailRequest
	if !decodeServiceRequest(w, r, &req) {
		return
	}
	if req.To == "" || req.Template == "" {
		writeError(w, http.StatusBadRequest, "to and template are required")
		return
	}
	event := r.Header.Get(EventIDHeader)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.duplicateEventLocked(w, d.mailEvents, event) {
		return
	}
	id := "msg_" + strconv.FormatInt(d.nextMail, 10)
	d.nextMail++
	d.mailsByOrder[req.OrderID]++
	d.stats.Mails++
	body, _ := json.Marshal(mailResponse{MessageID: id})
	d.storeLocked(d.mailEvents, event, storedResponse{status: http.StatusOK, body: body})
	writeRawJSON(w, http.StatusAccepted, body)
}

// duplicateEventLocked answers a repeated event id with the first
// delivery's body and status 200, and reports whether it did.
func (d *Downstream) duplicateEventLocked(w http.ResponseWriter, events map[string]storedResponse, event string) bool {
	if event == "" {
		return false
	}
	stored, ok := events[event]
	if !ok {
		return false
	}
	d.stats.DuplicateEvents++
	writeRawJSON(w, stored.status, stored.body)
	return true
}

// decodeServiceRequest reads a JSON object body into v, answering 400 or 413
// itself when it cannot. The fake services ignore unknown fields, as real
// third-party APIs usually do.
func decodeServiceRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := readBody(w, r)
	if errors.Is(err, errBodyTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return false
	}
	if err != nil || !isJSONObject(body) || json.Unmarshal(body, v) != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return false
	}
	return true
}

func (d *Downstream) handleGetControl(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.Faults())
}

// handlePutControl merges a partial Faults document into the current one
// and answers the result. Unknown fields are refused: a typo in a test's
// failure injection must not silently inject nothing.
func (d *Downstream) handlePutControl(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if errors.Is(err, errBodyTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	var patch faultsPatch
	if err == nil {
		err = decodeStrict(body, &patch)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	for {
		old := d.faults.Load()
		next, err := patch.apply(*old)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		// Compare-and-swap so that two concurrent patches both land.
		if d.faults.CompareAndSwap(old, &next) {
			d.logger.InfoContext(r.Context(), "faults changed", "faults", next)
			writeJSON(w, http.StatusOK, next)
			return
		}
	}
}

func (d *Downstream) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.Stats())
}

// handleHealthz answers liveness for both the order API and the fake
// services.
func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Faults returns the failure injection in force.
func (d *Downstream) Faults() Faults {
	return *d.faults.Load()
}

// SetFaults replaces the failure injection in force; calls already waiting
// out a latency keep the delay they started with.
func (d *Downstream) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	d.faults.Store(&f)
	return nil
}

// Stats returns a snapshot of the counters.
func (d *Downstream) Stats() DownstreamStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Charges returns how many times userID's card was charged.
func (d *Downstream) Charges(userID int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.chargesByUser[userID]
}

// Shipments returns how many shipments the warehouse accepted for orderID;
// more than one means a delivery without an event id was repeated.
func (d *Downstream) Shipments(orderID string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shipmentsByOrder[orderID]
}

// Mails returns how many mails were sent about orderID.
func (d *Downstream) Mails(orderID string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mailsByOrder[orderID]
}

// Available returns the stock of itemID and whether the item exists.
func (d *Downstream) Available(itemID string) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	it, ok := d.stock[itemID]
	return it.Available, ok
}
