package lifecycle

// Outcome says what a use case did.
type Outcome string

// Outcomes of Create, Delete and the sweep, as they appear in results, metrics and spans.
const (
	Created  Outcome = "created"
	Reused   Outcome = "reused"
	Replaced Outcome = "replaced"
	Conflict Outcome = "conflict"
	Deleted  Outcome = "deleted"
	NotFound Outcome = "not_found"
	Cleaned  Outcome = "cleaned"
	Failed   Outcome = "error"
	// AtCapacity: a create refused because the service holds MaxSandboxes already.
	AtCapacity Outcome = "at_capacity"
)
