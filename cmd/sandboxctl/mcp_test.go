package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/internal/testing/sandboxdtest"
)

// sandboxctl mcp, launched as a stdio server by the go-sdk's command transport, forwards
// to a real sandboxd (binary, Docker): tools listed, a command run, a file written and
// read back through the stdio session.
func TestMCPOverStdio(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, remove, err := sandboxdtest.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	srv := sandboxdtest.StartT(t, bin)

	cmd := exec.Command(os.Args[0], "mcp", "--chat", uuid.NewString(), "--server", srv.URL, "--token", sandboxdtest.Token)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	c := mcp.NewClient(&mcp.Implementation{Name: "stdio-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) != 8 {
		t.Fatalf("list tools: %v (%d tools)", err, len(tools.Tools))
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "a.txt", "content": "via stdio"}}); err != nil || res.IsError {
		t.Fatalf("write_file: %v %+v", err, res)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "exec", Arguments: map[string]any{"shell": "cat a.txt; exit 4"}})
	if err != nil || res.IsError {
		t.Fatalf("exec: %v %+v", err, res)
	}
	b, _ := json.Marshal(res.StructuredContent)
	var out struct {
		ExitCode int `json:"exit_code"`
		Stdout   string
	}
	_ = json.Unmarshal(b, &out)
	if out.ExitCode != 4 || out.Stdout != "via stdio" {
		t.Errorf("exec over stdio: %+v", out)
	}
}
