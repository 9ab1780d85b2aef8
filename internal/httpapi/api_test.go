package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testing/syncbuf"
)

type putAnswer struct {
	client.Session
	Result string `json:"result"`
}

// put sends a raw PUT and returns its status and decoded answer.
func (f *fixture) put(t *testing.T, chat, body string) (int, putAnswer) {
	t.Helper()
	resp := f.request(t, http.MethodPut, "/v1/chats/"+chat+"/sandbox", body, nil)
	var a putAnswer
	if resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, a
}

func TestSandboxCycleThroughHTTP(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const canonical = "0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"
	body := `{"agent_id":"coder","volume_host_path":"/srv/work/a"}`

	status, created := f.put(t, "0B6F1F7E3C1A4D0E9A616F0D2C8E4B1A", body)
	if status != http.StatusCreated || created.Result != "created" {
		t.Fatalf("first PUT: %d %q, want 201 created", status, created.Result)
	}
	if created.ChatID != canonical || created.ContainerID != "ctr-1" || created.Status != "RUNNING" ||
		created.AgentID != "coder" || created.VolumeHostPath != "/srv/work/a" || created.Expired {
		t.Errorf("created session = %+v", created.Session)
	}
	if want := f.clock.Now().Add(testTTL); !created.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %v, want %v", created.ExpiresAt, want)
	}

	status, reused := f.put(t, "{"+canonical+"}", body)
	if status != http.StatusOK || reused.Result != "reused" || reused.SessionID != created.SessionID {
		t.Fatalf("second PUT: %d %q session %s, want 200 reused %s", status, reused.Result, reused.SessionID, created.SessionID)
	}

	_, _, err := f.client.Create(ctx, canonical, client.CreateBody{AgentID: "reviewer", VolumeHostPath: "/srv/work/a"})
	var problem *client.Error
	if !errors.Is(err, client.ErrConflict) || !errors.As(err, &problem) || problem.Status != http.StatusConflict {
		t.Fatalf("PUT for another agent: %v, want a 409 conflict", err)
	}
	if !strings.Contains(problem.Detail, `agent "coder"`) {
		t.Errorf("conflict detail %q does not say which agent holds the sandbox", problem.Detail)
	}
	if c, s, d := f.runtimeCalls(); c != 1 || s != 0 || d != 0 {
		t.Errorf("after create, reuse, conflict: creates=%d stops=%d deletes=%d, want 1 0 0", c, s, d)
	}

	f.clock.Advance(testTTL)
	got, err := f.client.Get(ctx, canonical)
	if err != nil || !got.Expired || got.SessionID != created.SessionID {
		t.Fatalf("GET after the TTL: %+v, %v; want the first session, expired", got, err)
	}
	status, replaced := f.put(t, canonical, body)
	if status != http.StatusCreated || replaced.Result != "replaced" ||
		replaced.SessionID == created.SessionID || replaced.ContainerID != "ctr-2" {
		t.Fatalf("PUT after the TTL: %d %+v, want 201 replaced with a new session", status, replaced)
	}
	if c, s, _ := f.runtimeCalls(); c != 2 || s != 1 {
		t.Errorf("after replace: creates=%d stops=%d, want 2 1", c, s)
	}

	got, err = f.client.Get(ctx, canonical)
	if err != nil || got.SessionID != replaced.SessionID || got.Expired {
		t.Fatalf("GET after replace: %+v, %v", got, err)
	}

	del, err := f.client.Delete(ctx, strings.ToUpper(canonical))
	if err != nil {
		t.Fatal(err)
	}
	want := client.DeleteResult{ChatID: canonical, Result: client.Deleted, SessionID: replaced.SessionID, ContainerID: "ctr-2"}
	if del != want {
		t.Errorf("DELETE = %+v, want %+v", del, want)
	}
	if _, _, d := f.runtimeCalls(); d != 1 || f.rows(t) != 0 {
		t.Errorf("after delete: deletes=%d rows=%d, want 1 0", d, f.rows(t))
	}
	del, err = f.client.Delete(ctx, canonical)
	if err != nil || del != (client.DeleteResult{ChatID: canonical, Result: client.NotFound}) {
		t.Errorf("second DELETE = %+v, %v, want not_found with no ids", del, err)
	}
	if _, err := f.client.Get(ctx, canonical); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("GET after delete: %v, want 404", err)
	}
}

func TestClientCreateReportsResult(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	chat := "6a1f3f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"
	for _, want := range []client.Result{client.Created, client.Reused} {
		s, got, err := f.client.Create(ctx, chat, client.CreateBody{AgentID: "a"})
		if err != nil || got != want || s.ChatID != chat {
			t.Fatalf("Create = %+v %q %v, want %q", s, got, err, want)
		}
	}
}

func chatN(n int) string {
	return "00000000-0000-0000-0000-0000000000" + string(rune('0'+n/10)) + string(rune('0'+n%10))
}

func TestListPagesAndFilters(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	create := func(n int, agent string) {
		t.Helper()
		if _, _, err := f.client.Create(ctx, chatN(n), client.CreateBody{AgentID: agent}); err != nil {
			t.Fatal(err)
		}
	}
	create(3, "a")
	create(1, "b")
	create(5, "a")
	f.clock.Advance(2 * testTTL) // 1, 3, 5 expire
	create(2, "a")
	create(4, "b")

	var all []string
	pages := 0
	for after := ""; ; {
		page, err := f.client.List(ctx, client.ListOptions{Limit: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range page.Items {
			all = append(all, s.ChatID)
		}
		if page.Next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		after = page.Next
	}
	if want := []string{chatN(1), chatN(2), chatN(3), chatN(4), chatN(5)}; strings.Join(all, ",") != strings.Join(want, ",") || pages != 3 {
		t.Errorf("paged list = %v in %d pages, want %v in 3", all, pages, want)
	}

	yes, no := true, false
	for _, tc := range []struct {
		name string
		opts client.ListOptions
		want []string
	}{
		{"agent", client.ListOptions{AgentID: "a"}, []string{chatN(2), chatN(3), chatN(5)}},
		{"expired", client.ListOptions{Expired: &yes}, []string{chatN(1), chatN(3), chatN(5)}},
		{"live", client.ListOptions{Expired: &no}, []string{chatN(2), chatN(4)}},
		{"live of agent b", client.ListOptions{AgentID: "b", Expired: &no}, []string{chatN(4)}},
		{"no such agent", client.ListOptions{AgentID: "z"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, err := f.client.List(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range page.Items {
				got = append(got, s.ChatID)
				if tc.opts.Expired != nil && s.Expired != *tc.opts.Expired {
					t.Errorf("%s: expired = %v", s.ChatID, s.Expired)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || page.Next != "" {
				t.Errorf("list = %v next %q, want %v and no next", got, page.Next, tc.want)
			}
		})
	}

	resp := f.request(t, http.MethodGet, "/v1/sandboxes?agent_id=z", "", nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"items":[]`) {
		t.Errorf("empty list: %d %s, want 200 with items []", resp.StatusCode, b)
	}
}

// oneByteAtATime hides the body's length, so the request is sent chunked.
type oneByteAtATime struct{ r io.Reader }

func (o oneByteAtATime) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

func TestBadInputIsRefusedWithoutSideEffects(t *testing.T) {
	const chat = "/v1/chats/0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a/sandbox"
	big := `{"agent_id":"` + strings.Repeat("x", 2000) + `"}`
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		body       string
		headers    map[string]string
		chunked    bool
		wantStatus int
		wantDetail string
	}{
		{"malformed chat id on PUT", http.MethodPut, "/v1/chats/not-a-uuid/sandbox", `{}`, nil, false, 422, `"not-a-uuid" is not a UUID`},
		{"nil chat id on PUT", http.MethodPut, "/v1/chats/00000000-0000-0000-0000-000000000000/sandbox", `{}`, nil, false, 422, "nil UUID"},
		{"short chat id on PUT", http.MethodPut, "/v1/chats/0b6f1f7e-3c1a-4d0e/sandbox", `{}`, nil, false, 422, `"0b6f1f7e-3c1a-4d0e" is not a UUID`},
		{"malformed chat id on GET", http.MethodGet, "/v1/chats/xyz/sandbox", "", nil, false, 422, `"xyz" is not a UUID`},
		{"nil chat id on DELETE", http.MethodDelete, "/v1/chats/00000000000000000000000000000000/sandbox", "", nil, false, 422, "nil UUID"},
		{"unknown field", http.MethodPut, chat, `{"agent_id":"a","colour":"red"}`, nil, false, 422, "colour"},
		{"wrong field type", http.MethodPut, chat, `{"agent_id":5}`, nil, false, 422, "agent_id"},
		{"duplicate key", http.MethodPut, chat, `{"agent_id":"a","volume_host_path":"","agent_id":"b"}`, nil, false, 422, `duplicate key "agent_id" in the request body (body.agent_id)`},
		{"duplicate nested key", http.MethodPost, chat + "/exec", `{"cmd":["true"],"env":{"A":"1","B":"2","A":"3"}}`, nil, false, 422, `duplicate key "A" in the request body (body.env.A)`},
		{"duplicate key in an array", http.MethodPost, chat + "/exec", `{"cmd":["true"],"x":[{"k":1},{"k":1,"k":2}]}`, nil, false, 422, `(body.x[1].k)`},
		{"not JSON", http.MethodPut, chat, `{"agent_id":`, nil, false, 400, "unexpected end of JSON"},
		{"wrong content type", http.MethodPut, chat, `{"agent_id":"a"}`, map[string]string{"Content-Type": "text/plain"}, false, 415, `"text/plain" is not supported`},
		{"form content type", http.MethodPut, chat, `agent_id=a`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, false, 415, "application/json"},
		{"body over the limit", http.MethodPut, chat, big, nil, false, 413, "over the limit of 1024 bytes"},
		{"chunked body over the limit", http.MethodPut, chat, big, nil, true, 413, "over the limit of 1024 bytes"},
		{"missing token", http.MethodPut, chat, `{}`, map[string]string{"Authorization": ""}, false, 401, "missing bearer token"},
		{"wrong token", http.MethodPut, chat, `{}`, map[string]string{"Authorization": "Bearer s3cret-tokem"}, false, 401, "invalid bearer token"},
		{"token prefix", http.MethodPut, chat, `{}`, map[string]string{"Authorization": "Bearer s3cret"}, false, 401, "invalid bearer token"},
		{"basic auth", http.MethodPut, chat, `{}`, map[string]string{"Authorization": "Basic czNjcmV0LXRva2Vu"}, false, 401, "missing bearer token"},
		{"wrong token on list", http.MethodGet, "/v1/sandboxes", "", map[string]string{"Authorization": "Bearer nope"}, false, 401, "invalid bearer token"},
		{"malformed after", http.MethodGet, "/v1/sandboxes?after=nope", "", nil, false, 422, `after "nope" is not a chat id`},
		{"limit zero", http.MethodGet, "/v1/sandboxes?limit=0", "", nil, false, 422, "limit"},
		{"limit too big", http.MethodGet, "/v1/sandboxes?limit=100000", "", nil, false, 422, "limit"},
		{"no such route", http.MethodGet, "/v1/chats/0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a/sandbox/extra", "", nil, false, 404, "no such route: GET /v1/chats/"},
		{"method not allowed", http.MethodPost, chat, `{}`, nil, false, 405, "POST is not allowed"},
		{"expired not a bool", http.MethodGet, "/v1/sandboxes?expired=maybe", "", nil, false, 422, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var resp *http.Response
			if tc.chunked {
				req, err := http.NewRequest(tc.method, f.srv.URL+tc.path, oneByteAtATime{strings.NewReader(tc.body)})
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+testToken)
				if resp, err = f.srv.Client().Do(req); err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
			} else {
				resp = f.request(t, tc.method, tc.path, tc.body, tc.headers)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			var p struct {
				Status int    `json:"status"`
				Title  string `json:"title"`
				Detail string `json:"detail"`
				Code   string `json:"code"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("problem body: %v", err)
			}
			if p.Code != httpapi.CodeForStatus(tc.wantStatus) {
				t.Errorf("code = %q, want %q", p.Code, httpapi.CodeForStatus(tc.wantStatus))
			}
			t.Logf("%d %s", p.Status, p.Detail)
			if p.Status != tc.wantStatus || p.Title != http.StatusText(tc.wantStatus) || !strings.Contains(p.Detail, tc.wantDetail) {
				t.Errorf("problem = %+v, want status %d and a detail containing %q", p, tc.wantStatus, tc.wantDetail)
			}
			if tc.wantStatus == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
			}
			f.assertUntouched(t)
		})
	}
}

func TestRefusedRequestsLeaveTheLiveSandboxAlone(t *testing.T) {
	f := newFixture(t)
	chat := "0b6f1f7e-3c1a-4d0e-9a61-6f0d2c8e4b1a"
	if status, _ := f.put(t, chat, `{"agent_id":"a"}`); status != http.StatusCreated {
		t.Fatalf("PUT = %d", status)
	}
	f.clock.Advance(testTTL) // expired: a PUT that got through would replace it
	path := "/v1/chats/" + chat + "/sandbox"
	for _, r := range []struct {
		method, body string
		headers      map[string]string
		want         int
	}{
		{http.MethodDelete, "", map[string]string{"Authorization": "Bearer wrong"}, 401},
		{http.MethodPut, `{"agent_id":"a"}`, map[string]string{"Authorization": ""}, 401},
		{http.MethodPut, `{"agent_id":"a","extra":1}`, nil, 422},
		{http.MethodPut, `{"agent_id":"` + strings.Repeat("a", 2000) + `"}`, nil, 413},
		{http.MethodPut, `{"agent_id":"a"}`, map[string]string{"Content-Type": "text/yaml"}, 415},
	} {
		if resp := f.request(t, r.method, path, r.body, r.headers); resp.StatusCode != r.want {
			t.Errorf("%s %s: %d, want %d", r.method, r.body[:min(len(r.body), 30)], resp.StatusCode, r.want)
		}
	}
	if c, s, d := f.runtimeCalls(); c != 1 || s != 0 || d != 0 || f.rows(t) != 1 {
		t.Errorf("after refused requests: creates=%d stops=%d deletes=%d rows=%d, want 1 0 0 1", c, s, d, f.rows(t))
	}
}

func TestServerErrorsDoNotLeakInternals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.runtime.FailCreates(errors.New("docker: dial unix /var/run/secret.sock: permission denied"))
	_, _, err := f.client.Create(ctx, chatN(1), client.CreateBody{})
	var p *client.Error
	if !errors.As(err, &p) || p.Status != http.StatusInternalServerError {
		t.Fatalf("create with a failing runtime: %v, want 500", err)
	}
	if strings.Contains(p.Detail, "secret") || strings.Contains(p.Detail, "docker") {
		t.Errorf("500 detail %q leaks the runtime's error", p.Detail)
	}

	f.runtime.FailCreates(errors.Join(errors.New("engine at tcp://10.0.0.7:2376 refused"), sandbox.ErrUnavailable))
	_, _, err = f.client.Create(ctx, chatN(1), client.CreateBody{})
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &p) || strings.Contains(p.Detail, "10.0.0.7") {
		t.Fatalf("create with an unavailable runtime: %v, want a 503 without the engine's address", err)
	}
	if f.rows(t) != 0 {
		t.Errorf("registry holds %d sessions after failed creates", f.rows(t))
	}
}

func TestProbesMetricsAndDocumentAreOpen(t *testing.T) {
	notReady := errors.New("registry: ping: connection refused")
	ready := error(nil)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "sandbox_active_count 0\n")
	})
	logs := &syncbuf.Buffer{}
	f := newFixture(t, func(c *httpapi.Config) {
		c.Ready = func(context.Context) error { return ready }
		c.Metrics = metrics
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	noAuth := map[string]string{"Authorization": ""}
	for _, tc := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", 200, `"status":"ok"`},
		{"/readyz", 200, `"status":"ready"`},
		{"/metrics", 200, "sandbox_active_count 0"},
		{"/openapi.json", 200, `"openapi":"3.1.0"`},
	} {
		resp := f.request(t, http.MethodGet, tc.path, "", noAuth)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.wantStatus || !strings.Contains(string(b), tc.wantBody) {
			t.Errorf("GET %s = %d %s, want %d with %s", tc.path, resp.StatusCode, b, tc.wantStatus, tc.wantBody)
		}
	}

	ready = notReady
	resp := f.request(t, http.MethodGet, "/readyz", "", noAuth)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(b), "connection refused") || strings.Contains(string(b), "registry") {
		t.Errorf("GET /readyz when not ready = %d %s, want 503 without the dependency's error", resp.StatusCode, b)
	}
	if !strings.Contains(logs.String(), `"msg":"not_ready"`) || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the readiness failure is not in the log:\n%s", logs.String())
	}

	bare := newFixture(t, func(c *httpapi.Config) { c.Metrics = nil })
	if resp := bare.request(t, http.MethodGet, "/metrics", "", noAuth); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics with no exporter = %d, want 404", resp.StatusCode)
	}
}

func TestRequestsAreLogged(t *testing.T) {
	var buf bytes.Buffer
	f := newFixture(t, func(c *httpapi.Config) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	f.request(t, http.MethodGet, "/v1/chats/"+chatN(7)+"/sandbox", "", nil)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if rec["msg"] != "http_request" || rec["method"] != "GET" || rec["path"] != "/v1/chats/"+chatN(7)+"/sandbox" ||
		rec["status"] != float64(404) || rec["duration"] == nil {
		t.Errorf("log record = %v", rec)
	}
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := httpapi.New(httpapi.Config{}); err == nil {
		t.Error("New without Sandboxes: no error")
	}
	f := newFixture(t)
	for _, cfg := range []httpapi.Config{
		{Sandboxes: f.svc, Tokens: []string{"ok", " "}},
		{Sandboxes: f.svc, MaxBodyBytes: -1},
	} {
		if _, err := httpapi.New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

func TestParallelPutsMakeOneSandbox(t *testing.T) {
	f := newFixture(t)
	const n = 20
	type answer struct {
		status  int
		session string
	}
	answers := make(chan answer, n)
	var start sync.WaitGroup
	start.Add(1)
	var done sync.WaitGroup
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/v1/chats/"+chatN(9)+"/sandbox", strings.NewReader(`{"agent_id":"a"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var a putAnswer
			_ = json.NewDecoder(resp.Body).Decode(&a)
			answers <- answer{resp.StatusCode, a.SessionID}
		}()
	}
	start.Done()
	done.Wait()
	close(answers)
	statuses := map[int]int{}
	sessions := map[string]bool{}
	for a := range answers {
		statuses[a.status]++
		sessions[a.session] = true
	}
	if statuses[201] != 1 || statuses[200] != n-1 || len(sessions) != 1 {
		t.Errorf("statuses %v, sessions %v: want one 201, %d 200s, one session", statuses, sessions, n-1)
	}
	if c, _, _ := f.runtimeCalls(); c != 1 || f.rows(t) != 1 {
		t.Errorf("creates=%d rows=%d, want 1 1", c, f.rows(t))
	}
}

func TestBodyAtTheLimitIsAccepted(t *testing.T) {
	f := newFixture(t) // MaxBodyBytes 1024
	prefix, suffix := `{"agent_id":"`, `"}`
	body := prefix + strings.Repeat("a", 1024-len(prefix)-len(suffix)) + suffix
	if len(body) != 1024 {
		t.Fatalf("body is %d bytes", len(body))
	}
	// agent_id is at most 256 characters: the body passes the size check and is then
	// refused by validation, which shows it was read whole.
	resp := f.request(t, http.MethodPut, "/v1/chats/"+chatN(1)+"/sandbox", body, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), "body.agent_id") {
		t.Errorf("PUT of exactly the limit = %d %s, want 422 about agent_id", resp.StatusCode, b)
	}
	body = `{"volume_host_path":"/` + strings.Repeat("v", 1024-len(`{"volume_host_path":"/`)-len(suffix)) + suffix
	if status, _ := f.put(t, chatN(1), body); len(body) != 1024 || status != http.StatusCreated {
		t.Errorf("PUT of %d bytes = %d, want 201", len(body), status)
	}
}

// A dependency that hangs does not hang the probe: /readyz answers 503 within 2 s, both
// when the check heeds its context and when it does not.
func TestReadyzAnswersWithin2sWhenADependencyHangs(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for name, check := range map[string]func(context.Context) error{
		"heeds its context":   func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
		"ignores its context": func(context.Context) error { <-release; return nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(c *httpapi.Config) { c.Ready = check })
			start := time.Now()
			resp := f.request(t, http.MethodGet, "/readyz", "", map[string]string{"Authorization": ""})
			b, _ := io.ReadAll(resp.Body)
			if took := time.Since(start); resp.StatusCode != http.StatusServiceUnavailable || took >= 2*time.Second {
				t.Errorf("GET /readyz with a hung dependency = %d %s after %s, want 503 within 2 s", resp.StatusCode, b, took)
			}
		})
	}
}
