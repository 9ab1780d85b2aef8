package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("create: %w", sandbox.ErrInvalid), http.StatusUnprocessableEntity},
		{fmt.Errorf("get: %w", sandbox.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("create: %w", sandbox.ErrConflict), http.StatusConflict},
		{fmt.Errorf("exec: %w", sandbox.ErrExpired), http.StatusConflict},
		{fmt.Errorf("write: %w", sandbox.ErrTooLarge), http.StatusRequestEntityTooLarge},
		{fmt.Errorf("exec: %w", sandbox.ErrBusy), http.StatusTooManyRequests},
		{fmt.Errorf("lock: %w", sandbox.ErrUnavailable), http.StatusServiceUnavailable},
		{fmt.Errorf("create: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{errors.New("boom"), http.StatusInternalServerError},
		{context.Canceled, http.StatusInternalServerError},
	} {
		if got := statusFor(tc.err); got != tc.want {
			t.Errorf("statusFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
