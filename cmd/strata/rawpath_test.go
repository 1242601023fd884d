package main

import "testing"

func TestShowPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/etc/passwd", "/etc/passwd"},
		{"/home/ä ö/ü", "/home/ä ö/ü"},
		{"/latin1_\xe9t\xe9", `/latin1_\xe9t\xe9`},
		{"/ctrl_\x01\x1b[31m", `/ctrl_\x01\x1b[31m`},
		{"/new\nline", `/new\x0aline`},
		{`/back\slash`, `/back\\slash`},
		{"/zero\u200bwidth", `/zero\u200bwidth`},
	} {
		if got := showPath(tt.in); got != tt.want {
			t.Errorf("showPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
