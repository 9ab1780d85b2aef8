package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestParseChatIDAcceptsEverySpellingAndCanonicalises(t *testing.T) {
	const canonical = "11111111-1111-1111-1111-111111111111"
	for _, in := range []string{
		canonical,
		"11111111111111111111111111111111",
		"{11111111-1111-1111-1111-111111111111}",
		"urn:uuid:11111111-1111-1111-1111-111111111111",
		"AAAAAAAA-1111-1111-1111-111111111111",
	} {
		id, err := sandbox.ParseChatID(in)
		if err != nil {
			t.Errorf("ParseChatID(%q): %v", in, err)
			continue
		}
		want := canonical
		if in[0] == 'A' {
			want = "aaaaaaaa-1111-1111-1111-111111111111"
		}
		if id.String() != want {
			t.Errorf("ParseChatID(%q) = %s, want %s", in, id, want)
		}
	}
}

func TestParseChatIDRefusesWhatIsNotAChat(t *testing.T) {
	for _, in := range []string{"", "chat-1", "1111", "00000000-0000-0000-0000-000000000000",
		"11111111-1111-1111-1111-11111111111g", "11111111-1111-1111-1111-111111111111\x00"} {
		if _, err := sandbox.ParseChatID(in); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("ParseChatID(%q): err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestExpiredIncludesTheBoundary(t *testing.T) {
	now := time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expires time.Time
		want    bool
	}{{now.Add(-time.Nanosecond), true}, {now, true}, {now.Add(time.Nanosecond), false}} {
		if got := (sandbox.Session{ExpiresAt: tc.expires}).Expired(now); got != tc.want {
			t.Errorf("Expired with expiry %v at %v = %v, want %v", tc.expires, now, got, tc.want)
		}
	}
}

type driverError struct{}

func (driverError) Error() string { return "boom" }

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("op: %w", sandbox.ErrConflict), "conflict"},
		{fmt.Errorf("op: %w", sandbox.ErrUnavailable), "unavailable"},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", driverError{})), "sandbox_test.driverError"},
	} {
		if got := sandbox.ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
