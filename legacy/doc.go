// Package legacy simulates the order backend that strangler migrates away
// from, together with the fake downstream services it calls.
//
// The simulator is deliberately written "the old way" (SPEC.md §11): a
// single synchronous call chain per request that reads the user, checks and
// reserves stock at the inventory service, charges the payment service,
// commits the order, asks the warehouse to ship it and sends a confirmation
// mail, all before answering the client. Its known flaws are kept on
// purpose, because the rebuilt service is measured against them:
//
//   - a warehouse failure after payment leaves the order "paid" forever
//     (there is no retry) while the client still gets 201;
//   - a retried POST /orders charges the card twice (Idempotency-Key is
//     accepted and ignored);
//   - a slow payment service stalls the request, and with a bounded worker
//     pool (Options.Workers) every other request behind it.
//
// The wire contract is written down in docs/order-api.md; the rebuilt
// service must reproduce it byte for byte except for generated fields.
//
// The package imports nothing of this project (the standard library, and
// pgx for PostgresStore, which runs on the schema newpath's migrations
// create): the proxy never links it, it talks to it over HTTP, exactly as
// it would to the real legacy system.
package legacy
