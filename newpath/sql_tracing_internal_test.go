package newpath

import "testing"

// TestStatementName: a SQL span is named after the statement's file in
// queries/, or after its first keyword, and never carries the SQL itself.
func TestStatementName(t *testing.T) {
	tracer := newSQLTracer(nil)
	tests := []struct {
		name string
		sql  string
		want string
	}{
		{name: "embedded statement", sql: query("get_user"), want: "get_user"},
		{name: "embedded statement after a comment", sql: query("claim_events"), want: "claim_events"},
		{name: "pgx's begin", sql: "begin", want: "BEGIN"},
		{name: "another package's statement", sql: "SELECT id FROM orders WHERE id = $1", want: "SELECT"},
		{name: "leading comments", sql: "-- why\n/* and how */ insert into t values ($1)", want: "INSERT"},
		{name: "only a comment", sql: "-- nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tracer.statementName(tt.sql); got != tt.want {
				t.Errorf("statementName(%q) = %q; want %q", tt.sql, got, tt.want)
			}
		})
	}
}
