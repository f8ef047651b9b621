package actions

import (
	"fmt"
	"testing"
	"time"
)

// FuzzGrantWindow: whatever hours and dates a client sends, what is taken
// is exactly a well-formed window: hours that print back the same, inside
// one day, and dates in the years a grant can mean.
func FuzzGrantWindow(f *testing.F) {
	for _, s := range []string{"09:00-12:00", "22:00-06:00", "10:00--1:00", "+9:00-10:00", "24:00-01:00", "09:00-24:00", "0001-01-01", "2026-12-24", "2026-12-24T18:00:00+01:00"} {
		f.Add(s)
	}
	s := &Service{loc: time.UTC}
	f.Fuzz(func(t *testing.T, in string) {
		if start, end, err := parseHours(in); err == nil {
			if start < 0 || start >= 24*60 || end < 0 || end > 24*60 || start == end {
				t.Fatalf("parseHours(%q) = %d, %d", in, start, end)
			}
			if back := fmt.Sprintf("%02d:%02d-%02d:%02d", start/60, start%60, end/60, end%60); back != in {
				t.Fatalf("parseHours(%q) took it as %q", in, back)
			}
		}
		if tm, err := s.ParseGrantTime("until", in); err == nil && in != "" {
			if y := tm.UTC().Year(); tm.IsZero() || y < minGrantYear || y > maxGrantYear {
				t.Fatalf("ParseGrantTime(%q) = %v", in, tm)
			}
		}
	})
}
