package layers

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// TagError is a tag Commit refuses: Reason says why, in words for the
// user. It matches ErrInvalid.
type TagError struct {
	Tag    string
	Reason string
}

func (e *TagError) Error() string { return fmt.Sprintf("tag %q %s", e.Tag, e.Reason) }

func (e *TagError) Unwrap() error { return ErrInvalid }

// tagCharReasons are the characters a tag must not contain, each with
// what it would break.
var tagCharReasons = []struct {
	char   rune
	reason string
}{
	{'/', "contains '/': the --all mount shows each tag as a file name in VOLUME/tags/"},
	{'~', "contains '~': in a revision spec TAG~N counts back from TAG"},
	{'@', "contains '@': NAME@REV splits at the first '@'"},
	{':', "contains ':': NAME@REV:PATH splits at the ':'"},
	{',', "contains ',': --tag and --keep-tag take comma-separated lists"},
}

// CheckTag returns a *TagError if tag cannot be named by a revision spec
// as itself (design.md "Revision specs"), would change what a spec means,
// or cannot be shown by the --all mount. Tags already stored are not
// checked again: they stay readable.
//
// A tag that is also an id prefix ("abc", "beef") is allowed, as a tag
// wins over an id prefix in Resolve; one as long as a whole id is not,
// since a whole id wins over a tag.
func CheckTag(tag string) error {
	bad := func(reason string) error { return &TagError{Tag: tag, Reason: reason} }
	lower := strings.ToLower(tag)
	switch {
	case tag == "":
		return bad("is empty")
	case len(tag) > MaxNameLen:
		return bad(fmt.Sprintf("is %d bytes long, more than the %d a file name in the --all mount's VOLUME/tags/ can have", len(tag), MaxNameLen))
	case !utf8.ValidString(tag):
		return bad("is not valid UTF-8")
	case tag == "." || tag == "..":
		return bad("cannot be a file name in the --all mount's VOLUME/tags/")
	case lower == "latest" || lower == "last":
		return bad("is a revision spec keyword (NAME@" + lower + " is the newest revision)")
	case lower == "protected":
		return bad("is what 'strata list' shows in the tags column for a protected revision ('strata protect' protects one)")
	}
	for _, c := range tagCharReasons {
		if strings.ContainsRune(tag, c.char) {
			return bad(c.reason)
		}
	}
	for _, r := range tag {
		switch {
		case unicode.IsSpace(r):
			return bad("contains whitespace: scripts split the columns of 'strata list' at it")
		case unicode.IsControl(r):
			return bad(fmt.Sprintf("contains the control character %U", r))
		}
	}
	switch {
	case strings.Trim(tag, "0123456789") == "":
		return bad("is all digits: in a revision spec N counts back from the newest revision")
	case reAge.MatchString(tag):
		return bad("reads as an age in a revision spec (NAME@3d is the newest revision at least 3 days old)")
	case len(tag) == idLen && reHex.MatchString(lower):
		return bad("reads as a whole revision id, which a revision spec takes over a tag")
	}
	if _, _, ok := ParseTime(tag); ok {
		return bad("reads as a date in a revision spec (NAME@2026-11-20 is the newest revision at or before that day)")
	}
	return nil
}

// idLen is the length of a revision id: 8 random bytes in hex (Commit).
const idLen = 16
