package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycletest"
	"github.com/sandboxd/sandboxd/internal/sqlitestore"
)

// BenchmarkGet measures the registry read of every reuse.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	chat := uuid.New()
	if err := st.Save(ctx, lifecycletest.NewSession(chat, time.Now().Add(time.Hour))); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := st.Get(ctx, chat); err != nil {
				b.Fatal(err)
			}
		}
	})
}
