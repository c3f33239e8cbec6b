package newpath

import (
	"context"
	"io/fs"
	"path"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// sqlTracer makes a client span for each SQL statement and each batch a
// pool runs, named after the statement's file in queries/ ("claim_key"),
// or its first keyword ("BEGIN", "COMMIT", another package's SELECT). The
// SQL text and its arguments are never recorded: arguments are customer
// data, and the name says which statement it was.
//
// A statement runs in a span only inside a trace: the relay's claim every
// poll interval, the metrics' outbox query at every scrape and the
// migrations at start have no parent, and a root trace for each would
// bury the traces of orders.
type sqlTracer struct {
	tracer trace.Tracer
	// names maps each embedded statement, as the store sends it, to its
	// file name.
	names map[string]string
}

var (
	_ pgx.QueryTracer = (*sqlTracer)(nil)
	_ pgx.BatchTracer = (*sqlTracer)(nil)
)

func newSQLTracer(tp trace.TracerProvider) *sqlTracer {
	t := &sqlTracer{tracer: tracerFrom(tp), names: map[string]string{}}
	files, _ := fs.Glob(queryFiles, "queries/*.sql")
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".sql")
		t.names[query(name)] = name
	}
	return t
}

// sqlSpanKey holds the span a Trace*Start began, so that Trace*End ends
// that span and never the caller's when Start began none.
type sqlSpanKey struct{}

// statementName is the queries/ file of sql, or its first keyword.
func (t *sqlTracer) statementName(sql string) string {
	if name, ok := t.names[sql]; ok {
		return name
	}
	return operationOf(sql)
}

// operationOf is the first keyword of sql in upper case, after any
// comments: SELECT, INSERT, WITH, BEGIN.
func operationOf(sql string) string {
	for {
		sql = strings.TrimSpace(sql)
		switch {
		case strings.HasPrefix(sql, "--"):
			if i := strings.IndexByte(sql, '\n'); i >= 0 {
				sql = sql[i+1:]
				continue
			}
			return ""
		case strings.HasPrefix(sql, "/*"):
			if i := strings.Index(sql, "*/"); i >= 0 {
				sql = sql[i+2:]
				continue
			}
			return ""
		}
		end := strings.IndexFunc(sql, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
		})
		if end < 0 {
			end = len(sql)
		}
		return strings.ToUpper(sql[:end])
	}
}

func (t *sqlTracer) start(ctx context.Context, name, operation string, attrs ...attribute.KeyValue) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	attrs = append(attrs,
		// db.system is the name before semantic conventions 1.26; trace
		// backends' service graphs still look for it.
		attribute.String("db.system", "postgresql"),
		semconv.DBSystemNamePostgreSQL,
		semconv.DBOperationName(operation),
		semconv.DBQuerySummary(name))
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, sqlSpanKey{}, span)
}

func endSQLSpan(ctx context.Context, err error) {
	span, ok := ctx.Value(sqlSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return t.start(ctx, t.statementName(data.SQL), operationOf(data.SQL))
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *sqlTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	endSQLSpan(ctx, data.Err)
}

// TraceBatchStart implements pgx.BatchTracer: one span for the batch,
// named "BATCH insert_event" when every statement is the same one.
func (t *sqlTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	name, operation := "", ""
	size := 0
	if data.Batch != nil {
		size = len(data.Batch.QueuedQueries)
		for i, q := range data.Batch.QueuedQueries {
			n, op := t.statementName(q.SQL), operationOf(q.SQL)
			if i == 0 {
				name, operation = n, op
			}
			if n != name {
				name = ""
			}
			if op != operation {
				operation = ""
			}
		}
	}
	return t.start(ctx, strings.TrimSpace("BATCH "+name), strings.TrimSpace("BATCH "+operation), semconv.DBOperationBatchSize(size))
}

// TraceBatchQuery implements pgx.BatchTracer: a failing statement marks
// the batch's span.
func (t *sqlTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	if data.Err == nil {
		return
	}
	if span, ok := ctx.Value(sqlSpanKey{}).(trace.Span); ok {
		span.RecordError(data.Err)
		span.SetStatus(codes.Error, data.Err.Error())
	}
}

// TraceBatchEnd implements pgx.BatchTracer.
func (t *sqlTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	endSQLSpan(ctx, data.Err)
}
