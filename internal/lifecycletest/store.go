// Package lifecycletest holds the conformance suites every implementation of the
// lifecycle's ports runs (TestStore, TestBinding and TestRestart for registries,
// TestLocker for per-chat lockers) and the fakes every test of a lifecycle.Service
// shares: Clock, Runtime and Executor. It is imported by tests only.
package lifecycletest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/lifecycle"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Base is the reference time of the suites; whole microseconds, which every engine keeps.
var Base = time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)

// NewSession returns a RUNNING session for chat expiring at expires, made a minute earlier.
func NewSession(chat uuid.UUID, expires time.Time) sandbox.Session {
	id := uuid.New()
	return sandbox.Session{
		ID:             id,
		ChatID:         chat,
		ContainerID:    "container-" + id.String(),
		Status:         sandbox.StatusRunning,
		CreatedAt:      expires.Add(-time.Minute),
		ExpiresAt:      expires,
		AgentID:        "agent-alpha",
		VolumeHostPath: "/srv/sandbox/" + chat.String(),
	}
}

// Equal reports whether two sessions are the same, times compared as instants.
func Equal(a, b sandbox.Session) bool {
	return a.ID == b.ID && a.ChatID == b.ChatID && a.ContainerID == b.ContainerID &&
		a.Status == b.Status && a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.AgentID == b.AgentID && a.VolumeHostPath == b.VolumeHostPath && a.TenantOf() == b.TenantOf()
}

// TestStore runs the registry conformance suite, in named parts. newStore must return an
// empty store, independent of every other it returned.
func TestStore(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	t.Run("Records", func(t *testing.T) { testRecords(t, newStore) })
	t.Run("OneSessionPerChat", func(t *testing.T) { testOneSessionPerChat(t, newStore) })
	t.Run("ExpiredSnapshot", func(t *testing.T) { testExpiredSnapshot(t, newStore) })
	t.Run("Listing", func(t *testing.T) { testListing(t, newStore) })
	t.Run("ConditionalRemoval", func(t *testing.T) { testConditionalRemoval(t, newStore) })
}

// testRecords checks a session is kept as saved, to the microsecond, and found by its chat.
func testRecords(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	ctx := context.Background()

	t.Run("SaveGetRoundTrip", func(t *testing.T) {
		st := newStore(t)
		s := NewSession(uuid.New(), Base.Add(5*time.Minute))
		s.AgentID, s.VolumeHostPath = "", ""
		mustSave(t, st, s)
		got, err := st.Get(ctx, s.ChatID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !Equal(got, s) {
			t.Fatalf("Get = %+v, want %+v", got, s)
		}
		if got.CreatedAt.Location() != time.UTC || got.ExpiresAt.Location() != time.UTC {
			t.Fatalf("times not in UTC: %v %v", got.CreatedAt.Location(), got.ExpiresAt.Location())
		}
	})

	t.Run("TimesKeepMicroseconds", func(t *testing.T) {
		st := newStore(t)
		s := NewSession(uuid.New(), Base.Add(5*time.Minute+123456*time.Microsecond))
		s.CreatedAt = Base.Add(654321 * time.Microsecond)
		mustSave(t, st, s)
		got, err := st.Get(ctx, s.ChatID)
		if err != nil || !Equal(got, s) {
			t.Fatalf("Get = %+v, %v; want %+v", got, err, s)
		}
		// One microsecond either side of the expiry decides what the sweep sees.
		if page, err := st.ListExpired(ctx, s.ExpiresAt.Add(-time.Microsecond), lifecycle.ExpiredAfter{}, 10); err != nil || len(page) != 0 {
			t.Fatalf("ListExpired a microsecond before expiry = %d sessions, %v; want none", len(page), err)
		}
		if page, err := st.ListExpired(ctx, s.ExpiresAt, lifecycle.ExpiredAfter{}, 10); err != nil || len(page) != 1 {
			t.Fatalf("ListExpired at expiry = %d sessions, %v; want 1", len(page), err)
		}
	})

	t.Run("GetMissingIsNotFound", func(t *testing.T) {
		st := newStore(t)
		if _, err := st.Get(ctx, uuid.New()); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("SetExpiry", func(t *testing.T) {
		st := newStore(t)
		s := NewSession(uuid.New(), Base)
		mustSave(t, st, s)
		later := Base.Add(time.Hour)
		if err := st.SetExpiry(ctx, s.ID, later); err != nil {
			t.Fatalf("SetExpiry: %v", err)
		}
		got, err := st.Get(ctx, s.ChatID)
		if err != nil || !got.ExpiresAt.Equal(later) {
			t.Fatalf("after SetExpiry: %+v, %v", got, err)
		}
		if err := st.SetExpiry(ctx, uuid.New(), later); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("SetExpiry of missing session: err = %v, want ErrNotFound", err)
		}
	})
}

// testOneSessionPerChat checks a chat has at most one session, also under concurrent saves, until it is removed.
func testOneSessionPerChat(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	ctx := context.Background()

	t.Run("SecondSaveIsAConflict", func(t *testing.T) {
		st := newStore(t)
		chat := uuid.New()
		first := NewSession(chat, Base)
		mustSave(t, st, first)
		if err := st.Save(ctx, NewSession(chat, Base.Add(time.Hour))); !errors.Is(err, sandbox.ErrConflict) {
			t.Fatalf("second Save for one chat: err = %v, want ErrConflict", err)
		}
		got, err := st.Get(ctx, chat)
		if err != nil || !Equal(got, first) {
			t.Fatalf("after refused Save: Get = %+v, %v; want the first session", got, err)
		}
		if n := mustCount(t, st); n != 1 {
			t.Fatalf("Count = %d, want 1", n)
		}
	})

	t.Run("ConcurrentSavesForOneChatAdmitOne", func(t *testing.T) {
		st := newStore(t)
		chat := uuid.New()
		const n = 16
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- st.Save(ctx, NewSession(chat, Base))
			}()
		}
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, sandbox.ErrConflict):
				t.Errorf("concurrent Save: unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d concurrent saves succeeded, want exactly 1", ok)
		}
	})

	t.Run("RemoveIsIdempotentAndPrecise", func(t *testing.T) {
		st := newStore(t)
		a, b := NewSession(uuid.New(), Base), NewSession(uuid.New(), Base)
		mustSave(t, st, a)
		mustSave(t, st, b)
		for range 2 {
			if err := st.Remove(ctx, a.ID); err != nil {
				t.Fatalf("Remove: %v", err)
			}
		}
		if _, err := st.Get(ctx, a.ChatID); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("removed session still there: %v", err)
		}
		if got, err := st.Get(ctx, b.ChatID); err != nil || !Equal(got, b) {
			t.Fatalf("other session disturbed: %+v, %v", got, err)
		}
		// The chat is free again.
		mustSave(t, st, NewSession(a.ChatID, Base))
	})
}

// testExpiredSnapshot checks the sweep's snapshot: expired sessions (expiry at or before
// now), oldest first, page by page after a cursor on expiry and chat id.
func testExpiredSnapshot(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	ctx := context.Background()
	now := Base
	// A store with three expired sessions (one exactly at now) and a live one.
	fixture := func(t *testing.T) (st lifecycle.Store, oldest, older, boundary sandbox.Session) {
		st = newStore(t)
		oldest = NewSession(uuid.New(), now.Add(-time.Hour))
		older = NewSession(uuid.New(), now.Add(-time.Minute))
		boundary = NewSession(uuid.New(), now)
		live := NewSession(uuid.New(), now.Add(time.Microsecond))
		for _, s := range []sandbox.Session{older, boundary, oldest, live} {
			mustSave(t, st, s)
		}
		return st, oldest, older, boundary
	}

	t.Run("OldestFirstAndInclusive", func(t *testing.T) {
		st, oldest, older, boundary := fixture(t)
		got, err := st.ListExpired(ctx, now, lifecycle.ExpiredAfter{}, 10)
		if err != nil {
			t.Fatalf("ListExpired: %v", err)
		}
		assertIDs(t, got, oldest, older, boundary)
	})

	t.Run("Limited", func(t *testing.T) {
		st, oldest, older, _ := fixture(t)
		got, err := st.ListExpired(ctx, now, lifecycle.ExpiredAfter{}, 2)
		if err != nil {
			t.Fatalf("ListExpired limited: %v", err)
		}
		assertIDs(t, got, oldest, older)
	})

	t.Run("AfterACursor", func(t *testing.T) {
		st, _, older, boundary := fixture(t)
		got, err := st.ListExpired(ctx, now, lifecycle.After(older), 2)
		if err != nil {
			t.Fatalf("ListExpired after a cursor: %v", err)
		}
		assertIDs(t, got, boundary)
	})

	// Ties on expiry are broken by chat id, so a page boundary inside a tie loses nothing.
	t.Run("TiesBrokenByChatID", func(t *testing.T) {
		st, _, _, boundary := fixture(t)
		twin := NewSession(uuid.New(), boundary.ExpiresAt)
		mustSave(t, st, twin)
		first, second := boundary, twin
		if compareChat(twin, boundary) < 0 {
			first, second = twin, boundary
		}
		got, err := st.ListExpired(ctx, now, lifecycle.After(first), 10)
		if err != nil {
			t.Fatalf("ListExpired inside a tie: %v", err)
		}
		assertIDs(t, got, second)
	})
}

// testListing checks the listing of the API: paged by chat id, filtered.
func testListing(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	ctx := context.Background()

	t.Run("PagesAndFilters", func(t *testing.T) {
		st := newStore(t)
		var all []sandbox.Session
		for i := range 7 {
			s := NewSession(uuid.New(), Base.Add(time.Duration(i-3)*time.Minute)) // 4 expired at Base
			if i%2 == 0 {
				s.AgentID = "agent-beta"
			}
			mustSave(t, st, s)
			all = append(all, s)
		}
		var seen []sandbox.Session
		for after := uuid.Nil; ; {
			page, err := st.List(ctx, lifecycle.ListFilter{After: after, Limit: 3})
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(page) > 3 {
				t.Fatalf("page of %d, limit 3", len(page))
			}
			seen = append(seen, page...)
			if len(page) < 3 {
				break
			}
			after = page[len(page)-1].ChatID
		}
		if len(seen) != len(all) {
			t.Fatalf("paged through %d sessions, want %d", len(seen), len(all))
		}
		for i := 1; i < len(seen); i++ {
			if seen[i-1].ChatID.String() >= seen[i].ChatID.String() {
				t.Fatalf("List not ordered by chat id at %d", i)
			}
		}
		count := func(f lifecycle.ListFilter) int {
			t.Helper()
			f.Limit = 100
			page, err := st.List(ctx, f)
			if err != nil {
				t.Fatalf("List(%+v): %v", f, err)
			}
			return len(page)
		}
		yes, no := true, false
		if n := count(lifecycle.ListFilter{AgentID: "agent-beta"}); n != 4 {
			t.Errorf("agent filter: %d, want 4", n)
		}
		if n := count(lifecycle.ListFilter{Expired: &yes, Now: Base}); n != 4 {
			t.Errorf("expired filter: %d, want 4", n)
		}
		if n := count(lifecycle.ListFilter{Expired: &no, Now: Base}); n != 3 {
			t.Errorf("live filter: %d, want 3", n)
		}
		if n := count(lifecycle.ListFilter{AgentID: "agent-beta", Expired: &no, Now: Base}); n != 2 {
			t.Errorf("agent+live filter: %d, want 2", n)
		}
		if n := mustCount(t, st); n != 7 {
			t.Errorf("Count = %d, want 7", n)
		}
	})

	t.Run("TenantKeptListedAndCountedApart", func(t *testing.T) {
		st := newStore(t)
		legacy := NewSession(uuid.New(), Base.Add(time.Minute)) // names no tenant
		mustSave(t, st, legacy)
		var acme []sandbox.Session
		for i := range 3 {
			s := NewSession(uuid.New(), Base.Add(time.Duration(i-1)*time.Minute)) // two expired at Base
			s.Tenant = "acme"
			mustSave(t, st, s)
			acme = append(acme, s)
		}
		got, err := st.Get(ctx, legacy.ChatID)
		if err != nil || got.TenantOf() != sandbox.DefaultTenant {
			t.Fatalf("Get of a session saved without tenant: tenant %q, %v; want %q", got.Tenant, err, sandbox.DefaultTenant)
		}
		if got, err := st.Get(ctx, acme[0].ChatID); err != nil || got.Tenant != "acme" {
			t.Fatalf("Get: tenant %q, %v; want acme", got.Tenant, err)
		}
		list := func(f lifecycle.ListFilter) []sandbox.Session {
			t.Helper()
			page, err := st.List(ctx, f)
			if err != nil {
				t.Fatalf("List(%+v): %v", f, err)
			}
			return page
		}
		slices.SortFunc(acme, compareChat)
		assertIDs(t, list(lifecycle.ListFilter{Tenant: "acme"}), acme...)
		assertIDs(t, list(lifecycle.ListFilter{Tenant: sandbox.DefaultTenant}), legacy)
		assertIDs(t, list(lifecycle.ListFilter{Tenant: "nobody"}))
		no := false
		if n := len(list(lifecycle.ListFilter{Tenant: "acme", Expired: &no, Now: Base})); n != 1 {
			t.Errorf("tenant+live filter: %d, want 1", n)
		}
		if n := len(list(lifecycle.ListFilter{})); n != 4 {
			t.Errorf("List without tenant: %d, want every tenant's 4", n)
		}
		for tenant, want := range map[string]int{"acme": 3, sandbox.DefaultTenant: 1, "nobody": 0} {
			if n, err := st.CountTenant(ctx, tenant); err != nil || n != want {
				t.Errorf("CountTenant(%s) = %d, %v; want %d", tenant, n, err, want)
			}
		}
	})

	t.Run("ListedByFolder", func(t *testing.T) {
		// The create's check that no other chat's sandbox uses a folder.
		st := newStore(t)
		shared, other := NewSession(uuid.New(), Base), NewSession(uuid.New(), Base.Add(time.Hour))
		shared.VolumeHostPath, other.VolumeHostPath = "/volumes/shared", "/volumes/other"
		mustSave(t, st, shared)
		mustSave(t, st, other)
		for folder, want := range map[string][]sandbox.Session{
			"/volumes/shared": {shared}, "/volumes/other": {other}, "/volumes/none": nil, "/volumes": nil,
		} {
			page, err := st.List(ctx, lifecycle.ListFilter{VolumeHostPath: folder})
			if err != nil {
				t.Fatalf("List(folder %s): %v", folder, err)
			}
			assertIDs(t, page, want...)
		}
	})
}

// testConditionalRemoval checks that the sweep's removal is conditional on the record still being
// the session it read and still expired, decided by the store in one write.
func testConditionalRemoval(t *testing.T, newStore func(t *testing.T) lifecycle.Store) {
	ctx := context.Background()
	// A sweep that lost its lock never forgets a session another replica extended or
	// replaced.
	t.Run("RemoveExpiredOnlyWhatIsStillThatExpiredSession", func(t *testing.T) {
		st := newStore(t)
		s := NewSession(uuid.New(), Base)
		mustSave(t, st, s)
		removeExpired := func(chat, session uuid.UUID, now time.Time) bool {
			t.Helper()
			removed, err := st.RemoveExpired(ctx, chat, session, now)
			if err != nil {
				t.Fatalf("RemoveExpired: %v", err)
			}
			return removed
		}
		if removeExpired(s.ChatID, s.ID, Base.Add(-time.Microsecond)) {
			t.Fatal("RemoveExpired removed a session a microsecond before its expiry")
		}
		// Extended by another replica after the sweep read it.
		if err := st.SetExpiry(ctx, s.ID, Base.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if removeExpired(s.ChatID, s.ID, Base) {
			t.Fatal("RemoveExpired removed a session extended past now")
		}
		if got, err := st.Get(ctx, s.ChatID); err != nil || got.ID != s.ID {
			t.Fatalf("the extended session: %+v, %v", got, err)
		}
		// The chat's session is another one: the expired one's ids must both match.
		if removeExpired(s.ChatID, uuid.New(), Base.Add(2*time.Hour)) || removeExpired(uuid.New(), s.ID, Base.Add(2*time.Hour)) {
			t.Fatal("RemoveExpired removed a session under another chat or session id")
		}
		if n := mustCount(t, st); n != 1 {
			t.Fatalf("Count = %d after refused removals, want 1", n)
		}
		if !removeExpired(s.ChatID, s.ID, Base.Add(time.Hour)) {
			t.Fatal("RemoveExpired kept the session at its expiry")
		}
		if _, err := st.Get(ctx, s.ChatID); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("Get after RemoveExpired: %v, want ErrNotFound", err)
		}
		if removeExpired(s.ChatID, s.ID, Base.Add(time.Hour)) {
			t.Fatal("RemoveExpired of a removed session reported a removal")
		}
	})
}

func compareChat(a, b sandbox.Session) int {
	return strings.Compare(a.ChatID.String(), b.ChatID.String())
}

func mustSave(t *testing.T, st lifecycle.Store, s sandbox.Session) {
	t.Helper()
	if err := st.Save(context.Background(), s); err != nil {
		t.Fatalf("Save(%s): %v", s.ChatID, err)
	}
}

func mustCount(t *testing.T, st lifecycle.Store) int {
	t.Helper()
	n, err := st.Count(context.Background())
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

func assertIDs(t *testing.T, got []sandbox.Session, want ...sandbox.Session) {
	t.Helper()
	ids := func(ss []sandbox.Session) string {
		out := ""
		for _, s := range ss {
			out += fmt.Sprintf("%s ", s.ID)
		}
		return out
	}
	if ids(got) != ids(want) {
		t.Fatalf("sessions = %s\nwant      %s", ids(got), ids(want))
	}
}
