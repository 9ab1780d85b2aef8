package lifecycle

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// zeroCounters adds 0 to every counter under each label set it can carry, so that a
// fresh process exports them all from its first scrape (the Prometheus convention:
// rate() and absent() alerts work before the first event, and after a restart).
func (s *Service) zeroCounters(ctx context.Context) {
	each := func(c metric.Int64Counter, key string, values ...string) {
		for _, v := range values {
			c.Add(ctx, 0, metric.WithAttributes(attribute.String(key, v)))
		}
	}
	each(s.m.createTotal, "result", string(Created), string(Reused), string(Replaced), string(Conflict), string(Failed))
	each(s.m.deleteTotal, "result", string(Deleted), string(NotFound), string(Failed))
	each(s.m.cleanupTotal, "result", string(Cleaned))
	each(s.m.cleanupErrorTotal, "error.type", "unavailable", "timeout", "canceled", "conflict", "invalid", "not_found")
	each(s.m.reconcileTotal, "result", string(orphanRemoved), string(recordRepaired), string(Failed), string(massRemovalRefused))
	each(s.m.diedTotal, "reason", "exited", "oom", "removed")
	each(s.m.execTotal, "result", string(execCompleted), string(execTimedOut), string(execCanceled), string(execBusy), string(Failed))
	each(s.m.keepaliveTotal, "result", "extended", string(Failed))
	for _, op := range []string{"write", "read", "list"} {
		for _, r := range []string{"ok", string(Failed)} {
			s.m.fileTotal.Add(ctx, 0, metric.WithAttributes(attribute.String("op", op), result(r)))
		}
	}
}
