package eventlog_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxd/sandboxd/internal/eventlog"
	"github.com/sandboxd/sandboxd/internal/lifecycle"
)

func TestRingsCountsAndSubscribersKeepToTheirTenantAndBounds(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 30, 0, time.UTC)
	l := eventlog.New(eventlog.Config{PerChat: 3, MaxChats: 10, Now: func() time.Time { return now }})
	a, b := uuid.New(), uuid.New()
	events, stop := l.Subscribe("t1")
	for i := range 5 {
		l.Record(lifecycle.Event{At: now, Tenant: "t1", ChatID: a, Type: lifecycle.EventExec, Detail: string(rune('0' + i))})
	}
	l.Record(lifecycle.Event{At: now, Tenant: "t2", ChatID: b, Type: lifecycle.EventCreated})
	l.Record(lifecycle.Event{At: now.Add(-2 * time.Minute), Tenant: "t1", ChatID: a, Type: lifecycle.EventCreated})

	got := l.Chat("t1", a)
	if len(got) != 3 || got[0].Detail != "3" || got[2].Type != lifecycle.EventCreated {
		t.Errorf("chat a's ring: %+v, want its last 3 events", got)
	}
	if got := l.Chat("t2", a); len(got) != 0 {
		t.Errorf("another tenant reads chat a: %+v", got)
	}
	hour := l.LastHour("t1")
	if len(hour) != eventlog.Minutes || hour[59].Counts[lifecycle.EventExec] != 5 || hour[57].Counts[lifecycle.EventCreated] != 1 {
		t.Errorf("t1's last minutes: %+v %+v", hour[57], hour[59])
	}
	if other := l.LastHour("t2"); other[59].Counts[lifecycle.EventExec] != 0 || other[59].Counts[lifecycle.EventCreated] != 1 {
		t.Errorf("t2's last minute: %+v", other[59])
	}
	n := 0
	for len(events) > 0 {
		if e := <-events; e.Tenant != "t1" {
			t.Errorf("t1's subscriber got %+v", e)
		}
		n++
	}
	if n != 6 {
		t.Errorf("t1's subscriber got %d events, want 6", n)
	}
	// A subscriber that does not read never blocks Record.
	for range 200 {
		l.Record(lifecycle.Event{At: now, Tenant: "t1", ChatID: a, Type: lifecycle.EventExec})
	}
	stop()
	stop()
	// An hour later the counts are gone; past MaxChats the quietest chats are forgotten.
	now = now.Add(time.Hour)
	if h := l.LastHour("t1"); h[59].Counts[lifecycle.EventExec] != 0 {
		t.Errorf("counts an hour later: %+v", h[59])
	}
	for range 20 {
		l.Record(lifecycle.Event{At: now, Tenant: "t1", ChatID: uuid.New(), Type: lifecycle.EventCreated})
	}
	if got := l.Chat("t1", a); len(got) != 0 {
		t.Errorf("the quietest chat is still kept past MaxChats: %d events", len(got))
	}
}
