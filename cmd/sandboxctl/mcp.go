package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// mcpCommand is a stdio MCP server for clients that only launch stdio servers: it
// forwards every message between its stdin/stdout and sandboxd's MCP endpoint of the
// chat, unchanged.
func (c *cli) mcpCommand() *cobra.Command {
	var chat, agent string
	cmd := &cobra.Command{
		Use:   "mcp --chat CHAT",
		Short: "Serve the chat's sandbox over MCP on stdin/stdout, forwarding to sandboxd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := sandbox.ParseChatID(chat)
			if err != nil {
				return err
			}
			server, token := c.endpoint()
			endpoint := strings.TrimRight(server, "/") + "/mcp/chats/" + id.String()
			if agent != "" {
				endpoint += "?agent_id=" + url.QueryEscape(agent)
			}
			return forwardMCP(cmd.Context(), c.stdin, c.stdout, endpoint, token)
		},
	}
	cmd.Flags().StringVar(&chat, "chat", "", "the chat whose sandbox the MCP client uses (required)")
	cmd.Flags().StringVar(&agent, "agent", "", "agent profile of the sandbox made on first use")
	_ = cmd.MarkFlagRequired("chat")
	return cmd
}

// forwardMCP copies MCP messages both ways until stdin ends or either side fails.
func forwardMCP(ctx context.Context, stdin io.Reader, stdout io.Writer, endpoint, token string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	local, err := (&mcp.IOTransport{Reader: io.NopCloser(stdin), Writer: nopWriteCloser{stdout}}).Connect(ctx)
	if err != nil {
		return err
	}
	defer local.Close()
	remote, err := (&mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: bearerTransport{token: token}},
	}).Connect(ctx)
	if err != nil {
		return fmt.Errorf("mcp: connect %s: %w", endpoint, err)
	}
	defer remote.Close()
	done := make(chan error, 2)
	pump := func(from, to mcp.Connection) {
		for {
			msg, err := from.Read(ctx)
			if err != nil {
				done <- err
				return
			}
			if err := to.Write(ctx, msg); err != nil {
				done <- err
				return
			}
		}
	}
	go pump(local, remote)
	go pump(remote, local)
	err = <-done
	cancel()
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil // the client closed stdin: the session is over
	}
	return fmt.Errorf("mcp: %w", err)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// bearerTransport adds the token to every request of the MCP transport.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}
