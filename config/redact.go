package config

import "regexp"

// redacted stands in for a secret.
const redacted = "xxxxx"

var (
	// userinfoPasswordRE is the password of a URL's userinfo, in a URL or
	// in text that quotes one: scheme://user:PASSWORD@. The password runs
	// to the last @ before a space, as url.Parse reads it, so an @, a /, a
	// quote or an escaped quote inside it is hidden too (over-hiding a
	// path is the safe side).
	userinfoPasswordRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^/?#@\s"'` + "`" + `:]*:)\S*@`)
	// secretParamRE is the value of a password-like parameter, in a URL's
	// query (?password=…&) or a libpq keyword/value string (password=…,
	// password = …, password='a b'), JSON escapes included.
	secretParamRE = regexp.MustCompile(`(?i)((?:^|[?&;\s"'` + "`" + `])(?:password|passwd|pwd|pass|sslpassword|sslkey|sslcert|token|access_token|auth_token|api_key|apikey|secret|client_secret)\s*=\s*)(?:'(?:\\.|[^'\\])*'|(?:\\.|[^&\s"'` + "`" + `#\\])*)`)
)

// Redact hides the secrets a string may carry in URLs: the password of a
// userinfo and the values of password-like parameters (password,
// sslpassword, sslkey, token, …). It takes a URL or any text that quotes
// URLs, such as a validation error or a log line, and is the one place
// strangler redacts: the admin API, validation errors, reload failures and
// logs all go through it.
func Redact(s string) string {
	s = userinfoPasswordRE.ReplaceAllString(s, "${1}"+redacted+"@")
	return secretParamRE.ReplaceAllString(s, "${1}"+redacted)
}
