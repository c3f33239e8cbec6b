// Package newpath is the rebuilt order service that traffic migrates to
// (SPEC.md §11): the legacy order API of docs/order-api.md, reproduced byte
// for byte, but written the way the legacy code should have been.
//
//   - Idempotent writes: POST /orders honours Idempotency-Key. The key is
//     claimed in a short statement of its own, with a lease, the payment
//     service is charged with the same key, the order is written under the
//     key only while the claim holds, and the response is stored under it,
//     so a retried or concurrent request gets the stored response, the card
//     is charged once and one order is written. No transaction or pooled
//     connection is held across a downstream call, and every request is
//     bounded by its own timeout.
//   - A transactional outbox instead of synchronous calls: the order and its
//     order_paid and order_confirmed events commit together, and a Relay
//     delivers the events to the warehouse and mail services at least once,
//     with an event id the receivers deduplicate on. A warehouse outage
//     delays fulfilment and loses nothing.
//   - Retention: a Pruner deletes idempotency keys and delivered outbox
//     events past their retention, in short batches.
//   - Dry runs: X-Strangler-Dry-Run: 1 computes the answer and commits,
//     charges and sends nothing, so the proxy can shadow writes.
//   - Structured logs with request_id and trace_id, neworders_* metrics,
//     and OpenTelemetry spans (ServerOptions.TracerProvider): the caller's
//     trace continues through the handler, its downstream calls and its
//     SQL, and, through the traceparent stored in each outbox row, through
//     the relay's asynchronous delivery.
//
// Storage is behind Store, implemented by PostgresStore (pgx/v5, migrations
// embedded and applied by Migrate) and MemoryStore; both pass one suite.
//
// The package imports nothing of this project: the proxy talks to it over
// HTTP, and only the commands wire it to the legacy simulator.
package newpath
