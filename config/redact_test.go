package config

import "testing"

func TestRedact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"userinfo password", "http://user:s3cret@host:9001/base", "http://user:xxxxx@host:9001/base"},
		{"userinfo without a password", "http://user@host", "http://user@host"},
		{"no userinfo", "http://127.0.0.1:9001", "http://127.0.0.1:9001"},
		{"password parameter", "postgres://db/x?sslmode=require&password=s3cret", "postgres://db/x?sslmode=require&password=xxxxx"},
		{"sslpassword and sslkey", "postgres://u:p@db/x?sslpassword=k3y&sslkey=/etc/k.pem&sslmode=verify-full",
			"postgres://u:xxxxx@db/x?sslpassword=xxxxx&sslkey=xxxxx&sslmode=verify-full"},
		{"token, any case", "http://prom:9090/?Token=abc&x=1", "http://prom:9090/?Token=xxxxx&x=1"},
		{"keyword/value string", "host=db password=s3cret user=u", "host=db password=xxxxx user=u"},
		{"a quoted URL in an error", `upstreams.legacy.url: "ftp://u:s3cret@host" must start with http:// or https://`,
			`upstreams.legacy.url: "ftp://u:xxxxx@host" must start with http:// or https://`},
		{"a password with an escaped @", "http://u:p%40ss@host", "http://u:xxxxx@host"},
		{"two URLs in one line", "from http://a:one@x to http://b:two@y", "from http://a:xxxxx@x to http://b:xxxxx@y"},
		{"a word that only ends like a secret", "http://host/?mytoken=v&passwordless=1", "http://host/?mytoken=v&passwordless=1"},
		{"an @ in the password", "http://u:p@ss@h:1/x", "http://u:xxxxx@h:1/x"},
		{"a quote in the password", "http://u:p'x`y@h", "http://u:xxxxx@h"},
		{"a slash in a password url.Parse refused", `"http://u:pa/ss?x#y@host" is not a URL`, `"http://u:xxxxx@host" is not a URL`},
		{"an escaped quote, as JSON writes it", `"url": "http://u:p\"q@h",`, `"url": "http://u:xxxxx@h",`},
		{"a JSON-escaped quote in a parameter", `"postgres://db/x?password=a\"b&sslmode=x"`, `"postgres://db/x?password=xxxxx&sslmode=x"`},
		{"a quoted libpq value", "host=db password='a b' user=u", "host=db password=xxxxx user=u"},
		{"libpq with spaces around =", "host=db password = s3cret user=u", "host=db password = xxxxx user=u"},
		{"nothing secret", "routes[0].weight: must be between 0 and 100, got 150", "routes[0].weight: must be between 0 and 100, got 150"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}
