package mcpserver_test

// The MCP server through the real sandboxd binary, the real Docker engine and the
// go-sdk's own client over HTTP.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdtest"
)

var binary string

func TestMain(m *testing.M) {
	bin, remove, err := sandboxdtest.Build(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := m.Run()
	remove()
	os.Exit(code)
}

// bearer adds the token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// connect opens an MCP session on chat's endpoint; progress, when not nil, receives the
// progress notifications.
func connect(t *testing.T, srv *sandboxdtest.Server, chat string, progress func(*mcp.ProgressNotificationParams)) *mcp.ClientSession {
	t.Helper()
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress(req.Params)
		}
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "sandboxd-test", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   srv.URL + "/mcp/chats/" + chat,
		HTTPClient: &http.Client{Transport: bearer{sandboxdtest.Token}},
	}, nil)
	if err != nil {
		t.Fatalf("connect to chat %s: %v", chat, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// call calls tool and decodes its structured result into out (nil: not decoded).
func call(t *testing.T, cs *mcp.ClientSession, tool string, args any, out any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if out != nil && !res.IsError {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: structured content %s: %v", tool, b, err)
		}
	}
	return res
}

// toolError returns the code and text of a tool error; it fails when res is no error.
func toolError(t *testing.T, tool string, res *mcp.CallToolResult) (code, text string) {
	t.Helper()
	if !res.IsError {
		t.Fatalf("%s: succeeded, want a tool error", tool)
	}
	if len(res.Content) > 0 {
		if tc, ok := res.Content[0].(*mcp.TextContent); ok {
			text = tc.Text
		}
	}
	code, _ = res.Meta["code"].(string)
	if !strings.HasPrefix(text, code+": ") {
		t.Errorf("%s: error text %q does not begin with its code %q", tool, text, code)
	}
	return code, text
}

type execOut struct {
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	TimedOut  bool   `json:"timed_out"`
	Truncated bool   `json:"truncated"`
}

func TestToolsAndTheirSchemas(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	cs := connect(t, srv, uuid.NewString(), nil)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]*mcp.Tool{}
	for _, tool := range res.Tools {
		tools[tool.Name] = tool
	}
	for _, name := range []string{"sandbox_status", "sandbox_create", "sandbox_delete", "exec", "read_file", "write_file", "list_files", "keepalive"} {
		tool := tools[name]
		if tool == nil {
			t.Errorf("tool %s is missing", name)
			continue
		}
		if tool.Description == "" || tool.InputSchema == nil || tool.OutputSchema == nil {
			t.Errorf("tool %s: description %q, input schema %v, output schema %v", name, tool.Description, tool.InputSchema, tool.OutputSchema)
		}
		in, _ := json.Marshal(tool.InputSchema)
		if strings.Contains(string(in), "chat") {
			t.Errorf("tool %s takes a chat: %s", name, in)
		}
	}
	in, _ := json.Marshal(tools["exec"].InputSchema)
	out, _ := json.Marshal(tools["exec"].OutputSchema)
	for _, prop := range []string{`"cmd"`, `"shell"`, `"workdir"`, `"env"`, `"stdin"`, `"timeout_s"`} {
		if !strings.Contains(string(in), prop) {
			t.Errorf("exec's input schema lacks %s: %s", prop, in)
		}
	}
	for _, prop := range []string{`"exit_code"`, `"stdout"`, `"stderr"`, `"truncated"`, `"timed_out"`} {
		if !strings.Contains(string(out), prop) {
			t.Errorf("exec's output schema lacks %s: %s", prop, out)
		}
	}
}

func TestExecStreamsProgressAndFilesMove(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	chat := uuid.NewString()
	var (
		mu     sync.Mutex
		chunks []string
	)
	cs := connect(t, srv, chat, func(p *mcp.ProgressNotificationParams) {
		mu.Lock()
		defer mu.Unlock()
		chunks = append(chunks, fmt.Sprintf("%v:%s", p.Meta["stream"], p.Message))
	})

	var status struct{ Exists bool }
	call(t, cs, "sandbox_status", map[string]any{}, &status)
	if status.Exists {
		t.Fatal("a fresh chat has a sandbox")
	}

	// Made on first use; output streamed while the command runs.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	params := &mcp.CallToolParams{Name: "exec", Arguments: map[string]any{
		"shell": "for i in 1 2 3; do echo out $i; sleep 0.2; done; echo oops >&2; exit 3",
	}}
	params.SetProgressToken("exec-1")
	res, err := cs.CallTool(ctx, params)
	if err != nil || res.IsError {
		t.Fatalf("exec: %v %+v", err, res)
	}
	var out execOut
	b, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(b, &out)
	if out.ExitCode != 3 || out.Stdout != "out 1\nout 2\nout 3\n" || out.Stderr != "oops\n" || out.TimedOut || out.Truncated {
		t.Errorf("exec result %+v", out)
	}
	// The client hands notifications to their handler apart from the result: the last
	// one may be handled just after CallTool returned.
	var (
		got string
		n   int
	)
	streamed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		got, n = strings.Join(chunks, ""), len(chunks)
		return n >= 3 && strings.Contains(got, "stdout:out 1\n") && strings.Contains(got, "stdout:out 3\n") && strings.Contains(got, "stderr:oops\n")
	}
	for deadline := time.Now().Add(5 * time.Second); !streamed() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !streamed() {
		t.Errorf("progress notifications %q (%d), want each line as it came", got, n)
	}

	call(t, cs, "exec", map[string]any{"cmd": []string{"sh", "-c", "cat > in.txt"}, "stdin": "from stdin"}, nil)
	call(t, cs, "write_file", map[string]any{"path": "src/hello.py", "content": "print('héllo')\n"}, nil)
	call(t, cs, "write_file", map[string]any{"path": "bin.dat", "content": "AAEC/w==", "encoding": "base64"}, nil)
	var list struct {
		Items []struct {
			Path  string
			Size  int64
			IsDir bool `json:"is_dir"`
		}
	}
	call(t, cs, "list_files", map[string]any{}, &list)
	names := []string{}
	for _, it := range list.Items {
		names = append(names, fmt.Sprintf("%s:%v", it.Path, it.IsDir))
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "bin.dat:false,in.txt:false,src:true" {
		t.Errorf("list_files = %v", names)
	}
	var read struct {
		Content, Encoding string
		Truncated         bool
	}
	call(t, cs, "read_file", map[string]any{"path": "/workspace/src/hello.py"}, &read)
	if read.Content != "print('héllo')\n" || read.Encoding != "utf-8" {
		t.Errorf("read_file text = %+v", read)
	}
	call(t, cs, "read_file", map[string]any{"path": "bin.dat"}, &read)
	if read.Content != "AAEC/w==" || read.Encoding != "base64" {
		t.Errorf("read_file binary = %+v", read)
	}
	call(t, cs, "exec", map[string]any{"cmd": []string{"python3", "--version"}}, nil) // may be absent: exit code only
	call(t, cs, "exec", map[string]any{"shell": "cat src/hello.py in.txt"}, &out)
	if out.Stdout != "print('héllo')\nfrom stdin" {
		t.Errorf("the workspace seen by exec: %q", out.Stdout)
	}
	var kept struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	call(t, cs, "keepalive", map[string]any{"ttl_s": 7200}, &kept)
	if time.Until(kept.ExpiresAt) < 110*time.Minute {
		t.Errorf("keepalive: expires at %v", kept.ExpiresAt)
	}
	var del struct{ Result string }
	call(t, cs, "sandbox_delete", map[string]any{}, &del)
	if del.Result != "deleted" {
		t.Errorf("sandbox_delete = %q", del.Result)
	}
}

func TestASessionReachesOnlyItsChat(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	chatA, chatB := uuid.NewString(), uuid.NewString()
	a := connect(t, srv, chatA, nil)
	call(t, a, "write_file", map[string]any{"path": "secret.txt", "content": "A's"}, nil)

	// A tool takes no chat: naming one is refused, and acts on nothing.
	res := call(t, a, "read_file", map[string]any{"path": "secret.txt", "chat_id": chatB}, nil)
	if code, _ := toolError(t, "read_file with a chat_id", res); code != "invalid" {
		t.Errorf("read_file with a chat_id: code %q, want invalid", code)
	}
	// Paths do not lead out of the workspace into another chat's.
	res = call(t, a, "read_file", map[string]any{"path": "../" + chatB + "/secret.txt"}, nil)
	if code, _ := toolError(t, "read_file ../", res); code != "invalid" {
		t.Errorf("read_file ../other: code %q, want invalid", code)
	}

	b := connect(t, srv, chatB, nil)
	var status struct{ Exists bool }
	call(t, b, "sandbox_status", map[string]any{}, &status)
	if status.Exists {
		t.Error("chat B has a sandbox before its session used one")
	}
	res = call(t, b, "read_file", map[string]any{"path": "secret.txt"}, nil)
	if code, _ := toolError(t, "read_file in B", res); code != "not_found" {
		t.Errorf("B reading A's file: code %q, want not_found", code)
	}
	var del struct{ Result string }
	call(t, b, "sandbox_delete", map[string]any{}, &del)
	call(t, a, "sandbox_status", map[string]any{}, &status)
	if !status.Exists {
		t.Error("B's delete removed A's sandbox")
	}
	// A session id, were there one, would not move a session: the server is stateless
	// and the URL binds every request.
	if id := a.ID(); id != "" {
		t.Errorf("session id %q: the server should be stateless", id)
	}
}

func TestBadTokensAndBadURLs(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	for _, tc := range []struct {
		name, path, auth string
		want             int
	}{
		{"no token", "/mcp/chats/" + uuid.NewString(), "", http.StatusUnauthorized},
		{"wrong token", "/mcp/chats/" + uuid.NewString(), "Bearer wrong", http.StatusUnauthorized},
		{"no token, bad chat", "/mcp/chats/x", "", http.StatusUnauthorized},
		{"bad chat", "/mcp/chats/not-a-uuid", "Bearer " + sandboxdtest.Token, http.StatusNotFound},
		{"no chat", "/mcp", "Bearer " + sandboxdtest.Token, http.StatusNotFound},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+tc.path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	http.DefaultClient.CloseIdleConnections()

	c := mcp.NewClient(&mcp.Implementation{Name: "x", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: srv.URL + "/mcp/chats/" + uuid.NewString(), HTTPClient: &http.Client{Transport: bearer{"wrong"}},
		MaxRetries: -1,
	}, nil); err == nil {
		_ = cs.Close()
		t.Error("a client with a wrong token connected")
	}
}

func TestToolErrorsCarryTheAPIsCodes(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	cs := connect(t, srv, uuid.NewString(), nil)
	for _, tc := range []struct {
		tool string
		args map[string]any
		code string
	}{
		{"exec", map[string]any{"cmd": []string{"true"}, "shell": "true"}, "invalid"},
		{"exec", map[string]any{}, "invalid"},
		{"exec", map[string]any{"cmd": []string{"true"}, "timeout_s": 100000}, "invalid"},
		{"read_file", map[string]any{"path": "missing.txt"}, "not_found"},
		{"write_file", map[string]any{"path": "x", "content": "!!", "encoding": "base64"}, "invalid"},
		{"keepalive", map[string]any{"ttl_s": 0}, "invalid"},
		{"list_files", map[string]any{"path": "../.."}, "invalid"},
	} {
		res := call(t, cs, tc.tool, tc.args, nil)
		if code, text := toolError(t, tc.tool, res); code != tc.code {
			t.Errorf("%s %v: code %q (%s), want %q", tc.tool, tc.args, code, text, tc.code)
		}
	}
	if !strings.Contains(metrics(t, srv), `sandbox_mcp_calls_total{`) {
		t.Error("/metrics has no sandbox_mcp_calls_total")
	}
	m := metrics(t, srv)
	for _, want := range []string{`result="invalid"`, `result="not_found"`, `tool="read_file"`} {
		if !strings.Contains(m, want) {
			t.Errorf("sandbox_mcp_calls_total lacks %s", want)
		}
	}
}

func metrics(t *testing.T, srv *sandboxdtest.Server) string {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

func TestConcurrentSessions(t *testing.T) {
	srv := sandboxdtest.StartT(t, binary)
	const n = 4
	chats := make([]string, n)
	sessions := make([]*mcp.ClientSession, n)
	for i := range n {
		chats[i] = uuid.NewString()
		sessions[i] = connect(t, srv, chats[i], nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := sessions[i].CallTool(ctx, &mcp.CallToolParams{Name: "exec", Arguments: map[string]any{
				"shell": fmt.Sprintf("echo %d > mine.txt; sleep 0.3; cat mine.txt", i),
			}})
			if err != nil || res.IsError {
				errs <- fmt.Errorf("session %d: %v %+v", i, err, res)
				return
			}
			b, _ := json.Marshal(res.StructuredContent)
			var out execOut
			_ = json.Unmarshal(b, &out)
			if out.Stdout != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("session %d saw %q", i, out.Stdout)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
